// Package storetest gives tests an etcd to run coordinator/store against:
// the embedded server (always) or the real etcd binary (when
// MOEMESH_ETCD_BIN names one; scripts/build-etcd.sh builds it). Either can be
// stopped and started again on the same data dir and ports, to test what
// survives an etcd outage.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
)

// Kind names how the etcd of a test runs.
type Kind string

const (
	// Embedded runs etcd in the test process (coordinator/etcdembed).
	Embedded Kind = "embedded"
	// Binary runs the etcd server binary named by MOEMESH_ETCD_BIN.
	Binary Kind = "binary"
)

// Kinds returns the kinds a test should run against: Embedded always,
// Binary when MOEMESH_ETCD_BIN is set. With MOEMESH_REQUIRE_ETCD_BIN=1 a
// missing MOEMESH_ETCD_BIN fails the test instead of being skipped quietly.
func Kinds(t testing.TB) []Kind {
	t.Helper()
	kinds := []Kind{Embedded}
	if os.Getenv("MOEMESH_ETCD_BIN") != "" {
		kinds = append(kinds, Binary)
	} else if os.Getenv("MOEMESH_REQUIRE_ETCD_BIN") == "1" {
		t.Fatal("storetest: MOEMESH_REQUIRE_ETCD_BIN=1 but MOEMESH_ETCD_BIN is unset; run: export MOEMESH_ETCD_BIN=$(scripts/build-etcd.sh)")
	}
	return kinds
}

// startTimeout bounds each start of a server.
const startTimeout = 20 * time.Second

// Etcd is a one-member etcd for one test. Its methods are not safe for
// concurrent use; call them from the test goroutine.
type Etcd struct {
	t         testing.TB
	kind      Kind
	dir       string
	clientURL string
	peerURL   string
	tls       *TLS
	mu        sync.Mutex
	stop      func() // stops the running server; nil when stopped
}

// Start starts an etcd of the given kind in a temporary data dir on free
// loopback ports. t.Cleanup stops it and removes the dir; the binary's
// process is killed even if the test fails, and dies with the test process.
func Start(t testing.TB, kind Kind) *Etcd {
	t.Helper()
	return start(t, kind, nil)
}

// TLS are the files of an etcd serving its clients over TLS with client
// certificate authentication (etcd's --cert-file, --key-file,
// --trusted-ca-file, --client-cert-auth). The certificate must allow
// client auth too: the test's health check presents it.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// StartTLS is Start with the client URL served over TLS: Endpoints are
// https and a client needs a certificate signed by tls.CAFile.
func StartTLS(t testing.TB, kind Kind, tls TLS) *Etcd {
	t.Helper()
	return start(t, kind, &tls)
}

func start(t testing.TB, kind Kind, tls *TLS) *Etcd {
	t.Helper()
	if kind != Embedded && kind != Binary {
		t.Fatalf("storetest: unknown kind %q", kind)
	}
	if kind == Binary && os.Getenv("MOEMESH_ETCD_BIN") == "" {
		t.Fatal("storetest: kind binary needs MOEMESH_ETCD_BIN")
	}
	e := &Etcd{t: t, kind: kind, tls: tls}
	base := t.TempDir() // removed after e.Stop: cleanups run last-registered first
	t.Cleanup(e.Stop)
	var err error
	// Free ports are found by listening on port 0 and closing; another
	// process may take one before etcd binds it, so try a few times.
	for attempt := 0; attempt < 5; attempt++ {
		e.dir = filepath.Join(base, fmt.Sprint(attempt))
		if e.clientURL, err = freeURL(); err != nil {
			break
		}
		if tls != nil {
			e.clientURL = "https" + strings.TrimPrefix(e.clientURL, "http")
		}
		if e.peerURL, err = freeURL(); err != nil {
			break
		}
		if err = e.start(); err == nil {
			return e
		}
	}
	t.Fatalf("storetest: start %s etcd: %v", kind, err)
	return nil
}

// Endpoints returns the client URL, the same across Stop and Start.
func (e *Etcd) Endpoints() []string { return []string{e.clientURL} }

// Stop stops the server, keeping its data dir and ports for Start. Stopping
// a stopped server does nothing.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

// Start starts the server again on the same data dir and ports; it fails the
// test if the server does not come up.
func (e *Etcd) Start() {
	e.t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = e.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond) // a port of the stopped server may still be held briefly
	}
	e.t.Fatalf("storetest: restart %s etcd: %v", e.kind, err)
}

func (e *Etcd) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop != nil {
		return errors.New("already running")
	}
	var err error
	switch e.kind {
	case Embedded:
		e.stop, err = e.startEmbedded()
	case Binary:
		e.stop, err = e.startBinary()
	}
	return err
}

func (e *Etcd) startEmbedded() (func(), error) {
	cfg := etcdembed.DefaultConfig(e.dir)
	cfg.ClientURL, cfg.PeerURL = e.clientURL, e.peerURL
	cfg.Log = nil
	cfg.StartTimeout = startTimeout
	if e.tls != nil {
		cfg.TLS = &etcdembed.ServerTLS{CertFile: e.tls.CertFile, KeyFile: e.tls.KeyFile, ClientCAFile: e.tls.CAFile}
	}
	srv, err := etcdembed.Start(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	return func() { srv.Close() }, nil
}

// freeURL returns an http URL on 127.0.0.1 with a port that was free a
// moment ago.
func freeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}
