package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Sentinel errors; every error of this package wraps one of them.
var (
	// ErrInvalid: a bad argument (unknown role, empty name, bad validity).
	ErrInvalid = errors.New("pki: invalid argument")
	// ErrBadFile: a certificate or key file that cannot be parsed or does
	// not match.
	ErrBadFile = errors.New("pki: bad certificate or key file")
	// ErrExists: an output file exists and overwriting was not asked for.
	ErrExists = errors.New("pki: file exists")
	// ErrNoRole: a certificate without exactly one moemesh role URI.
	ErrNoRole = errors.New("pki: certificate carries no moemesh role")
)

// Role is what a certificate's holder may do in the cluster.
type Role string

// Roles.
const (
	RoleCoordinator Role = "coordinator"
	RoleWorker      Role = "worker"
	RoleClient      Role = "client"
)

// Roles lists every role.
var Roles = []Role{RoleCoordinator, RoleWorker, RoleClient}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w: role %q: use one of coordinator, worker, client", ErrInvalid, s)
}

// roleURIPrefix starts the URI SAN that carries a role.
const roleURIPrefix = "spiffe://moemesh/role/"

// RoleURI is the URI SAN that marks a certificate with role r.
func RoleURI(r Role) *url.URL {
	u, _ := url.Parse(roleURIPrefix + string(r))
	return u
}

// RoleOf returns the role a certificate carries: its single
// spiffe://moemesh/role/ URI SAN. It does not verify the certificate.
func RoleOf(c *x509.Certificate) (Role, error) {
	var found []Role
	for _, u := range c.URIs {
		s := u.String()
		if rest, ok := strings.CutPrefix(s, roleURIPrefix); ok {
			r, err := ParseRole(rest)
			if err != nil {
				return "", fmt.Errorf("%w: unknown role in URI %q", ErrNoRole, s)
			}
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%w: %d role URIs (want exactly one %s<role>)", ErrNoRole, len(found), roleURIPrefix)
	}
	return found[0], nil
}

// Default validities, used by the CLI.
const (
	// DefaultCAValidity: ten years; rotating a CA means reissuing everything.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultCertValidity: one year; leaf certificates rotate by file.
	DefaultCertValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so peers with slightly slow clocks
	// accept a fresh certificate.
	clockSkew = 5 * time.Minute
)

// CA is a cluster certificate authority: its certificate and key.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a self-signed CA named name, valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: the CA needs a name", ErrInvalid)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("%w: validity %v must be positive", ErrInvalid, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"moemesh"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // leaves only: no intermediate CAs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing the CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Role Role
	// Name is the Subject common name (informational: a host or process
	// name).
	Name string
	// IPs and DNSNames are the addresses the holder serves on; a client
	// checks the one it dialled against them. A client-role certificate
	// may have none.
	IPs      []net.IP
	DNSNames []string
	Validity time.Duration
}

// Issued is a certificate and its key, PEM encoded.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a certificate for req. Coordinator and worker certificates
// serve and dial (server and client auth); client certificates only dial.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	if _, err := ParseRole(string(req.Role)); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, fmt.Errorf("%w: the certificate needs a name", ErrInvalid)
	}
	if req.Validity <= 0 {
		return nil, fmt.Errorf("%w: validity %v must be positive", ErrInvalid, req.Validity)
	}
	now := time.Now()
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("%w: validity %v outlives the CA (expires %s)", ErrInvalid, req.Validity, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating a key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Role != RoleClient {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.Name, Organization: []string{"moemesh"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		IPAddresses:  req.IPs,
		DNSNames:     req.DNSNames,
		URIs:         []*url.URL{RoleURI(req.Role)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing the issued certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding a key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// File names inside a CA directory and a certificate directory.
const (
	CACertFile = "ca.crt" // the CA certificate (PEM), in both directories
	CAKeyFile  = "ca.key" // the CA key (PEM PKCS#8), CA directory only, mode 0600
	CertFile   = "tls.crt"
	KeyFile    = "tls.key" // mode 0600
)

// Files names the three files a process reads: the CA bundle it trusts and
// its own certificate and key.
type Files struct {
	CA, Cert, Key string
}

// FilesIn returns the standard file names inside dir (as written by
// Issued.WriteFiles and `moemesh certs issue`).
func FilesIn(dir string) Files {
	return Files{CA: filepath.Join(dir, CACertFile), Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile)}
}

// WriteFiles writes ca.crt (0644) and ca.key (0600) into dir, creating it
// (0700). Without force an existing file is ErrExists and nothing is
// written.
func (ca *CA) WriteFiles(dir string, force bool) error {
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return err
	}
	return writeAll(dir, force, []outFile{
		{CACertFile, ca.CertPEM, 0o644},
		{CAKeyFile, keyPEM, 0o600},
	})
}

// WriteFiles writes ca.crt (0644, the CA that signed it, for the peers
// this process will trust), tls.crt (0644) and tls.key (0600) into dir.
// Without force an existing file is ErrExists and nothing is written.
func (is *Issued) WriteFiles(dir string, caPEM []byte, force bool) error {
	return writeAll(dir, force, []outFile{
		{CACertFile, caPEM, 0o644},
		{CertFile, is.CertPEM, 0o644},
		{KeyFile, is.KeyPEM, 0o600},
	})
}

type outFile struct {
	name string
	data []byte
	mode os.FileMode
}

// writeAll writes every file atomically (temp file, then rename), after
// checking that none exists unless force.
func writeAll(dir string, force bool, files []outFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if !force {
		for _, f := range files {
			p := filepath.Join(dir, f.name)
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%w: %s (use --force to overwrite)", ErrExists, p)
			}
		}
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	name := tmp.Name()
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("pki: writing %s: %w", path, err)
	}
	return nil
}

// LoadCA reads ca.crt and ca.key from dir and checks that they match and
// that the certificate is a CA.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CACertFile), err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrBadFile, filepath.Join(dir, CACertFile))
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: %s does not match %s", ErrBadFile, CAKeyFile, CACertFile)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrBadFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	return c, nil
}

func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM key block", ErrBadFile)
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block %q is not a private key", ErrBadFile, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: the key is %T, want ECDSA", ErrBadFile, k)
	}
	return ek, nil
}
