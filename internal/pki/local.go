package pki

import (
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// LocalPKI is an ephemeral CA and the certificates of a one-machine
// cluster (`moemesh local`), written under one directory.
type LocalPKI struct {
	CA          *CA
	Coordinator Files
	Workers     []Files
	// Client is an operator certificate (role client), for tools and
	// tests that call the cluster's internal services.
	Client Files
}

// LocalValidity is how long the certificates of NewLocal last: the life of
// a `moemesh local` run, generously.
const LocalValidity = 7 * 24 * time.Hour

// NewLocal makes a fresh CA and, under dir, a certificate directory per
// process: coordinator/, worker-0/ … worker-(workers-1)/ and client/, each
// holding ca.crt, tls.crt and tls.key (see Files). The server certificates
// name 127.0.0.1, ::1 and localhost: a local cluster listens on loopback.
// The CA key is never written; the caller removes dir when done.
func NewLocal(dir string, workers int) (*LocalPKI, error) {
	if workers < 0 {
		return nil, fmt.Errorf("%w: %d workers", ErrInvalid, workers)
	}
	ca, err := NewCA("moemesh local CA", LocalValidity+time.Hour)
	if err != nil {
		return nil, err
	}
	lp := &LocalPKI{CA: ca}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	dns := []string{"localhost"}
	issue := func(role Role, name string) (Files, error) {
		is, err := ca.Issue(IssueRequest{Role: role, Name: name, IPs: ips, DNSNames: dns, Validity: LocalValidity})
		if err != nil {
			return Files{}, err
		}
		d := filepath.Join(dir, name)
		if err := is.WriteFiles(d, ca.CertPEM, true); err != nil {
			return Files{}, err
		}
		return FilesIn(d), nil
	}
	if lp.Coordinator, err = issue(RoleCoordinator, "coordinator"); err != nil {
		return nil, err
	}
	for i := range workers {
		f, err := issue(RoleWorker, fmt.Sprintf("worker-%d", i))
		if err != nil {
			return nil, err
		}
		lp.Workers = append(lp.Workers, f)
	}
	if lp.Client, err = issue(RoleClient, "client"); err != nil {
		return nil, err
	}
	return lp, nil
}
