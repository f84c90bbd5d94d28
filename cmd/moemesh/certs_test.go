package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moemesh/moemesh/internal/pki"
)

func TestCertsInitAndIssue(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if code, _, stderr := runCLI(t, "", "certs", "init", "--out", caDir, "--expiry", "30d"); code != ExitOK {
		t.Fatalf("certs init: exit %d: %s", code, stderr)
	}
	for name, mode := range map[string]os.FileMode{pki.CACertFile: 0o644, pki.CAKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
	before, err := os.ReadFile(filepath.Join(caDir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runCLI(t, "", "certs", "init", "--out", caDir); code != ExitUsage {
		t.Fatalf("certs init over an existing CA: exit %d, want %d", code, ExitUsage)
	}
	after, _ := os.ReadFile(filepath.Join(caDir, pki.CAKeyFile))
	if string(after) != string(before) {
		t.Fatal("the refused init changed ca.key")
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(ca.Cert.NotAfter); d < 29*24*time.Hour || d > 30*24*time.Hour {
		t.Errorf("CA expires in %v, want 30 days", d)
	}

	wDir := filepath.Join(dir, "w0")
	code, _, stderr := runCLI(t, "", "certs", "issue", "--ca", caDir, "--role", "worker", "--name", "worker-0",
		"--ip", "10.1.2.3", "--ip", "127.0.0.1", "--dns", "worker-0.moemesh", "--out", wDir, "--expiry", "240h")
	if code != ExitOK {
		t.Fatalf("certs issue: exit %d: %s", code, stderr)
	}
	src, err := pki.NewSource(pki.FilesIn(wDir))
	if err != nil {
		t.Fatalf("NewSource on the issued files: %v", err)
	}
	if src.Role() != pki.RoleWorker {
		t.Fatalf("role %q, want worker", src.Role())
	}
	leaf := src.Certificate().Leaf
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, name := range []string{"10.1.2.3", "127.0.0.1", "worker-0.moemesh"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if d := time.Until(leaf.NotAfter); d < 239*time.Hour || d > 240*time.Hour {
		t.Errorf("expires in %v, want 240h", d)
	}
	fi, err := os.Stat(filepath.Join(wDir, pki.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("tls.key: %v, %v", fi, err)
	}
	if code, _, _ := runCLI(t, "", "certs", "issue", "--ca", caDir, "--role", "worker", "--name", "worker-0", "--ip", "10.1.2.3", "--out", wDir); code != ExitUsage {
		t.Fatalf("issue over existing files: exit %d, want %d", code, ExitUsage)
	}
	if code, _, stderr := runCLI(t, "", "certs", "issue", "--ca", caDir, "--role", "worker", "--name", "worker-0", "--ip", "10.1.2.3", "--out", wDir, "--force", "--expiry", "24h"); code != ExitOK {
		t.Fatalf("issue --force: exit %d: %s", code, stderr)
	}
	cDir := filepath.Join(dir, "alice")
	if code, _, stderr := runCLI(t, "", "certs", "issue", "--ca", caDir, "--role", "client", "--name", "alice", "--out", cDir, "--expiry", "1d"); code != ExitOK {
		t.Fatalf("issue client: exit %d: %s", code, stderr)
	}
}

func TestCertsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if code, _, stderr := runCLI(t, "", "certs", "init", "--out", caDir); code != ExitOK {
		t.Fatalf("certs init: exit %d: %s", code, stderr)
	}
	out := filepath.Join(dir, "x")
	tests := []struct {
		name string
		args []string
	}{
		{"init without out", []string{"certs", "init"}},
		{"init bad expiry", []string{"certs", "init", "--out", filepath.Join(dir, "ca2"), "--expiry", "forever"}},
		{"init zero days", []string{"certs", "init", "--out", filepath.Join(dir, "ca2"), "--expiry", "0d"}},
		{"issue without ca", []string{"certs", "issue", "--role", "worker", "--name", "w", "--ip", "127.0.0.1", "--out", out}},
		{"issue bad role", []string{"certs", "issue", "--ca", caDir, "--role", "admin", "--name", "w", "--ip", "127.0.0.1", "--out", out}},
		{"issue bad ip", []string{"certs", "issue", "--ca", caDir, "--role", "worker", "--name", "w", "--ip", "10.0.0", "--out", out}},
		{"worker without address", []string{"certs", "issue", "--ca", caDir, "--role", "worker", "--name", "w", "--out", out}},
		{"outlives the CA", []string{"certs", "issue", "--ca", caDir, "--role", "client", "--name", "w", "--out", out, "--expiry", "36500d"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, stderr := runCLI(t, "", tc.args...); code != ExitUsage {
				t.Fatalf("exit %d (%s), want %d", code, stderr, ExitUsage)
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused issue wrote %s (stat err %v)", out, err)
	}
	if code, _, _ := runCLI(t, "", "certs", "issue", "--ca", filepath.Join(dir, "missing"), "--role", "client", "--name", "w", "--out", out); code != ExitFailure {
		t.Fatalf("issue from a missing CA: exit %d, want %d", code, ExitFailure)
	}
}
