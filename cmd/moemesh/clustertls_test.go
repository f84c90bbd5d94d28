package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/internal/pki"
	"github.com/moemesh/moemesh/membership"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestClusterTLSFlags: a certificate directory of the wrong role, a
// missing one, and bad gossip keys are usage errors; the right ones load.
func TestClusterTLSFlags(t *testing.T) {
	lp, err := pki.NewLocal(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	coord, work := dirOf(lp.Coordinator), dirOf(lp.Workers[0])
	if _, _, err := (&clusterTLSFlags{Dir: work}).workerTLS(quiet); err != nil {
		t.Errorf("worker with a worker certificate: %v", err)
	}
	if opts, err := (&clusterTLSFlags{Dir: coord}).coordinatorDial(quiet); err != nil || len(opts) != 1 {
		t.Errorf("coordinator with a coordinator certificate: %d options, %v", len(opts), err)
	}
	if opts, err := (&clusterTLSFlags{}).coordinatorDial(quiet); err != nil || opts != nil {
		t.Errorf("no directory: %v, %v; want plaintext (nil options)", opts, err)
	}
	var ue *usageError
	for name, f := range map[string]func() error{
		"worker with a coordinator certificate": func() error { _, _, err := (&clusterTLSFlags{Dir: coord}).workerTLS(quiet); return err },
		"coordinator with a worker certificate": func() error { _, err := (&clusterTLSFlags{Dir: work}).coordinatorDial(quiet); return err },
		"missing directory":                     func() error { _, _, err := (&clusterTLSFlags{Dir: t.TempDir()}).workerTLS(quiet); return err },
	} {
		if err := f(); !errors.As(err, &ue) {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var g membership.Config
	if err := (&clusterTLSFlags{GossipKeyFile: write("good", "MDEyMzQ1Njc4OWFiY2RlZg==\n")}).gossip(quiet, &g); err != nil || string(g.SecretKey) != "0123456789abcdef" {
		t.Errorf("a 16-byte key: %q, %v", g.SecretKey, err)
	}
	for name, file := range map[string]string{
		"not base64": write("bad", "not base64!"),
		"10 bytes":   write("short", "MDEyMzQ1Njc4OQ=="),
		"missing":    filepath.Join(dir, "absent"),
	} {
		if err := (&clusterTLSFlags{GossipKeyFile: file}).gossip(quiet, &g); !errors.As(err, &ue) {
			t.Errorf("gossip key %s: %v, want a usage error", name, err)
		}
	}
}

// TestEtcdSecurityFlags: TLS follows the files or an https endpoint; a
// certificate with an http endpoint, a certificate without its key, and a
// password without a user are usage errors; the password is read from
// the environment.
func TestEtcdSecurityFlags(t *testing.T) {
	lp, err := pki.NewLocal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f := lp.Client
	cfg := func(ep string) *store.Config { c := store.DefaultConfig(); c.Endpoints = []string{ep}; return &c }

	c := cfg("http://127.0.0.1:2379")
	if err := (&etcdSecurityFlags{}).apply(c); err != nil || c.TLS != nil {
		t.Errorf("plaintext: TLS %v, %v", c.TLS, err)
	}
	c = cfg("https://127.0.0.1:2379")
	if err := (&etcdSecurityFlags{CACert: f.CA, Cert: f.Cert, Key: f.Key, User: "u"}).apply(c); err != nil || c.TLS == nil || c.TLS.GetClientCertificate == nil {
		t.Errorf("TLS with a client certificate: %+v, %v", c.TLS, err)
	}
	t.Setenv(etcdPasswordEnv, "pw")
	c = cfg("https://127.0.0.1:2379")
	if err := (&etcdSecurityFlags{CACert: f.CA, User: "u"}).apply(c); err != nil || c.Username != "u" || c.Password != "pw" {
		t.Errorf("user and password: %q %q, %v", c.Username, c.Password, err)
	}
	var ue *usageError
	for name, tc := range map[string]struct {
		ep string
		e  etcdSecurityFlags
	}{
		"certificate with http": {"http://127.0.0.1:2379", etcdSecurityFlags{CACert: f.CA, Cert: f.Cert, Key: f.Key}},
		"certificate, no key":   {"https://127.0.0.1:2379", etcdSecurityFlags{Cert: f.Cert}},
		"password, no user":     {"https://127.0.0.1:2379", etcdSecurityFlags{CACert: f.CA}},
	} {
		if err := tc.e.apply(cfg(tc.ep)); !errors.As(err, &ue) {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}

	// The embedded etcd's server flags: all three or none, and the
	// coordinator's client then needs a certificate.
	var ec etcdembed.Config
	if err := (&etcdServerFlags{}).apply(&ec, "127.0.0.1:2379", &etcdSecurityFlags{}); err != nil || ec.ClientURL != "http://127.0.0.1:2379" || ec.TLS != nil {
		t.Errorf("no server TLS: %q %v, %v", ec.ClientURL, ec.TLS, err)
	}
	s := lp.Coordinator
	full := etcdServerFlags{Cert: s.Cert, Key: s.Key, CACert: s.CA}
	if err := full.apply(&ec, "0.0.0.0:2379", &etcdSecurityFlags{CACert: f.CA, Cert: f.Cert, Key: f.Key}); err != nil || ec.ClientURL != "https://0.0.0.0:2379" || ec.TLS == nil {
		t.Errorf("server TLS: %q %v, %v", ec.ClientURL, ec.TLS, err)
	}
	if err := full.apply(&ec, "127.0.0.1:2379", &etcdSecurityFlags{}); !errors.As(err, &ue) {
		t.Errorf("server TLS without a client certificate: %v, want a usage error", err)
	}
	if err := (&etcdServerFlags{Cert: s.Cert}).apply(&ec, "127.0.0.1:2379", &etcdSecurityFlags{}); !errors.As(err, &ue) {
		t.Errorf("only --etcd-server-cert: %v, want a usage error", err)
	}
}
