package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/moemesh/moemesh/internal/syncio"
)

// startBinary runs the etcd binary and waits until /health answers.
func (e *Etcd) startBinary() (func(), error) {
	bin := os.Getenv("MOEMESH_ETCD_BIN")
	args := []string{
		"--name", "storetest",
		"--data-dir", e.dir,
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "storetest=" + e.peerURL,
		"--log-level", "error",
	}
	hc := http.DefaultClient
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.CertFile, "--key-file", e.tls.KeyFile,
			"--trusted-ca-file", e.tls.CAFile, "--client-cert-auth")
		tc, err := transport.TLSInfo{CertFile: e.tls.CertFile, KeyFile: e.tls.KeyFile, TrustedCAFile: e.tls.CAFile}.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("storetest: health check TLS: %w", err)
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	}
	cmd := exec.Command(bin, args...)
	stderr := syncio.Buffer{Limit: 64 << 10}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(startTimeout)
	for {
		if healthy(hc, e.clientURL) {
			return stop, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%s exited while starting: %s\n%s", bin, cmd.ProcessState, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s not healthy within %v:\n%s", bin, startTimeout, stderr.String())
		}
	}
}

// healthy reports whether etcd at url answers /health with health true.
func healthy(hc *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body [256]byte
	n, _ := resp.Body.Read(body[:])
	return resp.StatusCode == http.StatusOK && bytes.Contains(body[:n], []byte(`"health":"true"`))
}
