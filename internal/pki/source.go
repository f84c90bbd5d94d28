package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Source is a process's certificate material, read from Files and
// reloaded when they change. Every TLS handshake that uses a config built
// from it asks for the current material, which costs three stat calls; a
// file whose modification time or size changed is reread. A reload that
// fails (a file half written, a key that does not match the certificate
// yet) keeps the previous material and is reported by Err, so a rotation
// written file by file converges once all files are in place.
//
// Safe for concurrent use.
type Source struct {
	files Files

	mu      sync.Mutex
	stamps  [3]stamp
	cur     *material
	lastErr error
}

type stamp struct {
	mod  time.Time
	size int64
}

// material is one consistent load of the three files.
type material struct {
	cert *tls.Certificate // Leaf set
	pool *x509.CertPool
	role Role
}

// NewSource loads f, failing when the files are missing or inconsistent:
// the certificate must match the key, chain to one of the CAs in f.CA,
// and carry a role.
func NewSource(f Files) (*Source, error) {
	s := &Source{files: f}
	st, err := s.stat()
	if err != nil {
		return nil, err
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.stamps, s.cur = st, m
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.files }

// Err returns the error of the last failed reload, or nil when the files
// on disk are the ones in use.
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Role returns the role of the current certificate.
func (s *Source) Role() Role { return s.current().role }

// Certificate returns the current certificate (with Leaf set).
func (s *Source) Certificate() *tls.Certificate { return s.current().cert }

// Pool returns the current CA pool.
func (s *Source) Pool() *x509.CertPool { return s.current().pool }

// current returns the material, reloading it when a file changed.
func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.stat()
	if err != nil {
		s.lastErr = err
		return s.cur
	}
	if st == s.stamps {
		return s.cur
	}
	m, err := s.load()
	if err != nil {
		s.lastErr = err
		return s.cur
	}
	s.stamps, s.cur, s.lastErr = st, m, nil
	return s.cur
}

func (s *Source) stat() ([3]stamp, error) {
	var st [3]stamp
	for i, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("pki: %w", err)
		}
		st[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

func (s *Source) load() (*material, error) {
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certPEM, err := os.ReadFile(s.files.Cert)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	m, err := newMaterial(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s, %s: %w", s.files.CA, s.files.Cert, s.files.Key, err)
	}
	return m, nil
}

func newMaterial(caPEM, certPEM, keyPEM []byte) (*material, error) {
	pool := x509.NewCertPool()
	rest := bytes.TrimSpace(caPEM)
	n := 0
	for len(rest) > 0 {
		c, err := parseCert(rest)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("%w: CA bundle holds a certificate that is not a CA (%s)", ErrBadFile, c.Subject)
		}
		pool.AddCert(c)
		n++
		rest = bytes.TrimSpace(afterFirstPEM(rest))
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: empty CA bundle", ErrBadFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
		}
		pair.Leaf = leaf
	}
	role, err := RoleOf(leaf)
	if err != nil {
		return nil, err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: the certificate does not chain to the CA bundle: %w", ErrBadFile, err)
	}
	return &material{cert: &pair, pool: pool, role: role}, nil
}

// afterFirstPEM returns what follows the first PEM block of b.
func afterFirstPEM(b []byte) []byte {
	const end = "-----END "
	i := bytes.Index(b, []byte(end))
	if i < 0 {
		return nil
	}
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return nil
	}
	return b[i+j+1:]
}

// ServerTLS returns a config for a listener: it presents the current
// certificate, requires a client certificate and verifies it against the
// current CA pool (both reread per handshake). It does not check roles:
// pair it with an Authorizer, or pass roles to admit only those at the
// handshake (for listeners without per-method policy, e.g. HTTP).
func (s *Source) ServerTLS(roles ...Role) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.current()
			return &tls.Config{
				MinVersion:       tls.VersionTLS13,
				Certificates:     []tls.Certificate{*m.cert},
				ClientAuth:       tls.RequireAndVerifyClientCert,
				ClientCAs:        m.pool,
				VerifyConnection: checkRoles(roles, "client"),
			}, nil
		},
	}
}

// ClientTLS returns a config for dialling: it presents the current
// certificate and verifies the server's chain against the current CA pool
// and its name (the dialled host, IP or DNS name, or serverName when not
// empty) against its SANs. With roles it also requires the server's
// certificate to carry one of them (a worker dialling a peer expects a
// worker).
func (s *Source) ClientTLS(serverName string, roles ...Role) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The chain is verified in VerifyConnection against the CA pool of
		// the moment, which a static RootCAs could not follow.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: the server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         s.current().pool,
				Intermediates: inter,
				DNSName:       cs.ServerName,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("pki: server certificate: %w", err)
			}
			return checkRoles(roles, "server")(cs)
		},
	}
}

// checkRoles returns a VerifyConnection hook admitting only peers whose
// leaf certificate carries one of roles; none admits every role.
func checkRoles(roles []Role, who string) func(tls.ConnectionState) error {
	if len(roles) == 0 {
		return func(tls.ConnectionState) error { return nil }
	}
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("pki: the %s presented no certificate", who)
		}
		r, err := RoleOf(cs.PeerCertificates[0])
		if err != nil {
			return fmt.Errorf("pki: %s certificate: %w", who, err)
		}
		for _, ok := range roles {
			if r == ok {
				return nil
			}
		}
		return fmt.Errorf("pki: %s role %q is not one of %v", who, r, roles)
	}
}
