package pki

import (
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestIssue(t *testing.T) {
	ca := mustCA(t)
	tests := []struct {
		role      Role
		wantUsage []x509.ExtKeyUsage
	}{
		{RoleCoordinator, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		{RoleWorker, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		{RoleClient, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tc := range tests {
		t.Run(string(tc.role), func(t *testing.T) {
			ips := []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("fd00::7")}
			is, err := ca.Issue(IssueRequest{Role: tc.role, Name: "n1", IPs: ips, DNSNames: []string{"n1.example"}, Validity: time.Hour})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			c := is.Cert
			if r, err := RoleOf(c); err != nil || r != tc.role {
				t.Fatalf("RoleOf = %q, %v; want %q", r, err, tc.role)
			}
			if !slices.Equal(c.ExtKeyUsage, tc.wantUsage) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tc.wantUsage)
			}
			if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(ips[0]) || !c.IPAddresses[1].Equal(ips[1]) {
				t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, ips)
			}
			if !slices.Equal(c.DNSNames, []string{"n1.example"}) {
				t.Errorf("DNSNames = %v", c.DNSNames)
			}
			if d := time.Until(c.NotAfter); d > time.Hour || d < 59*time.Minute {
				t.Errorf("expires in %v, want about 1h", d)
			}
			if c.IsCA {
				t.Error("a leaf certificate is a CA")
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: poolOf(ca), KeyUsages: tc.wantUsage[:1], DNSName: "10.0.0.7"}); err != nil {
				t.Errorf("Verify against the CA: %v", err)
			}
		})
	}
}

func poolOf(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func TestIssueInvalid(t *testing.T) {
	ca := mustCA(t)
	tests := []struct {
		name string
		req  IssueRequest
	}{
		{"unknown role", IssueRequest{Role: "admin", Name: "x", Validity: time.Hour}},
		{"no name", IssueRequest{Role: RoleWorker, Validity: time.Hour}},
		{"no validity", IssueRequest{Role: RoleWorker, Name: "x"}},
		{"outlives the CA", IssueRequest{Role: RoleWorker, Name: "x", Validity: 48 * time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ca.Issue(tc.req); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := NewCA("x", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewCA(validity 0): err = %v, want ErrInvalid", err)
	}
}

func TestRoleOfRejects(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	tests := []struct {
		name string
		uris []*url.URL
	}{
		{"none", nil},
		{"other URI only", []*url.URL{u("spiffe://other/role/worker")}},
		{"unknown role", []*url.URL{u("spiffe://moemesh/role/root")}},
		{"two roles", []*url.URL{RoleURI(RoleWorker), RoleURI(RoleCoordinator)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := RoleOf(&x509.Certificate{URIs: tc.uris}); !errors.Is(err, ErrNoRole) {
				t.Fatalf("RoleOf = %q, %v; want ErrNoRole", r, err)
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t)
	caDir := filepath.Join(dir, "ca")
	if err := ca.WriteFiles(caDir, false); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	if err := ca.WriteFiles(caDir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second WriteFiles: err = %v, want ErrExists", err)
	}
	if err := ca.WriteFiles(caDir, true); err != nil {
		t.Fatalf("WriteFiles(force): %v", err)
	}
	checkMode(t, filepath.Join(caDir, CAKeyFile), 0o600)
	checkMode(t, filepath.Join(caDir, CACertFile), 0o644)
	loaded, err := LoadCA(caDir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("LoadCA returned another CA")
	}

	is, err := loaded.Issue(IssueRequest{Role: RoleWorker, Name: "w", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "w")
	if err := is.WriteFiles(out, ca.CertPEM, false); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	checkMode(t, filepath.Join(out, KeyFile), 0o600)
	if err := is.WriteFiles(out, ca.CertPEM, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second WriteFiles: err = %v, want ErrExists", err)
	}
	s, err := NewSource(FilesIn(out))
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	if s.Role() != RoleWorker {
		t.Fatalf("Role = %q", s.Role())
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

func TestLoadCAMismatch(t *testing.T) {
	a, b := mustCA(t), mustCA(t)
	dir := t.TempDir()
	if err := a.WriteFiles(dir, false); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := b.WriteFiles(other, false); err != nil {
		t.Fatal(err)
	}
	keyB, err := os.ReadFile(filepath.Join(other, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), keyB, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); !errors.Is(err, ErrBadFile) {
		t.Fatalf("err = %v, want ErrBadFile", err)
	}
}

func TestNewSourceRejects(t *testing.T) {
	a, b := mustCA(t), mustCA(t)
	is, err := a.Issue(IssueRequest{Role: RoleWorker, Name: "w", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Issue(IssueRequest{Role: RoleWorker, Name: "w2", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		ca, cert, key []byte
	}{
		{"foreign CA", b.CertPEM, is.CertPEM, is.KeyPEM},
		{"key of another certificate", a.CertPEM, is.CertPEM, other.KeyPEM},
		{"garbage CA", []byte("not pem"), is.CertPEM, is.KeyPEM},
		{"leaf as CA", is.CertPEM, is.CertPEM, is.KeyPEM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := FilesIn(dir)
			for p, b := range map[string][]byte{f.CA: tc.ca, f.Cert: tc.cert, f.Key: tc.key} {
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := NewSource(f); !errors.Is(err, ErrBadFile) {
				t.Fatalf("err = %v, want ErrBadFile", err)
			}
		})
	}
}

func TestNewLocal(t *testing.T) {
	dir := t.TempDir()
	lp, err := NewLocal(dir, 3)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	if len(lp.Workers) != 3 {
		t.Fatalf("%d worker file sets", len(lp.Workers))
	}
	want := map[Files]Role{lp.Coordinator: RoleCoordinator, lp.Client: RoleClient}
	for _, f := range lp.Workers {
		want[f] = RoleWorker
	}
	for f, role := range want {
		s, err := NewSource(f)
		if err != nil {
			t.Fatalf("NewSource(%v): %v", f, err)
		}
		if s.Role() != role {
			t.Errorf("%s: role %q, want %q", f.Cert, s.Role(), role)
		}
		if _, err := s.Certificate().Leaf.Verify(x509.VerifyOptions{Roots: poolOf(lp.CA), DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", f.Cert, err)
		}
		checkMode(t, f.Key, 0o600)
	}
	if _, err := os.Stat(filepath.Join(dir, "coordinator", CAKeyFile)); !os.IsNotExist(err) {
		t.Errorf("the ephemeral CA key was written (stat err %v)", err)
	}
}
