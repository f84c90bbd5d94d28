package main

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/internal/pki"
	"github.com/moemesh/moemesh/membership"
)

// The cluster's internal security settings (docs/security.md): mutual TLS
// on the worker and peer services, TLS and credentials towards etcd, the
// embedded etcd's TLS, and the worker's model roots.

// etcdPasswordEnv holds the etcd password. It is read from the environment
// only: a flag's value would show in every user's `ps`.
const etcdPasswordEnv = "MOEMESH_ETCD_PASSWORD"

// clusterTLSFlags select the certificate directory of a coordinator or a
// worker (ca.crt, tls.crt, tls.key: what `moemesh certs issue` writes).
// The gossip key file holds a base64 key of 16, 24 or 32 bytes.
type clusterTLSFlags struct {
	Dir           string
	GossipKeyFile string
}

func (c *clusterTLSFlags) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.Dir, "cluster-tls-dir", "", "directory with ca.crt, tls.crt and tls.key (moemesh certs issue): mutual TLS between coordinators and workers; without it the internal services are plaintext and open to anyone who reaches them")
	cmd.Flags().StringVar(&c.GossipKeyFile, "gossip-key-file", "", "file with the memberlist key, base64 of 16, 24 or 32 bytes (head -c 32 /dev/urandom | base64): gossip encrypted with AES-GCM, members without the key refused; every member needs the same key")
}

// gossip sets g's key from --gossip-key-file, warning without one.
func (c *clusterTLSFlags) gossip(log *slog.Logger, g *membership.Config) error {
	if c.GossipKeyFile == "" {
		log.Warn("INSECURE: no --gossip-key-file: memberlist gossip is unencrypted and unauthenticated (see docs/security.md)")
		return nil
	}
	b, err := os.ReadFile(c.GossipKeyFile)
	if err != nil {
		return usagef("--gossip-key-file: %v", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return usagef("--gossip-key-file %s: not base64: %v", c.GossipKeyFile, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return usagef("--gossip-key-file %s: the key is %d bytes; want 16, 24 or 32", c.GossipKeyFile, n)
	}
	g.SecretKey = key
	return nil
}

// source loads the directory's certificates, which must carry role; nil
// (and a warning) without --cluster-tls-dir.
func (c *clusterTLSFlags) source(log *slog.Logger, role pki.Role) (*pki.Source, error) {
	if c.Dir == "" {
		log.Warn("INSECURE: no --cluster-tls-dir: the worker and peer services run in plaintext without authentication; anyone who reaches a worker's port can load files and drive steps (see docs/security.md)")
		return nil, nil
	}
	src, err := pki.NewSource(pki.FilesIn(c.Dir))
	if err != nil {
		return nil, usagef("--cluster-tls-dir %s: %v", c.Dir, err)
	}
	if r := src.Role(); r != role {
		return nil, usagef("--cluster-tls-dir %s: the certificate has role %q; a %s needs a %s certificate (moemesh certs issue --role %s)", c.Dir, r, role, role, role)
	}
	return src, nil
}

// coordinatorDial returns the options of the coordinator's connections to
// workers: its certificate, and only servers with a worker certificate.
func (c *clusterTLSFlags) coordinatorDial(log *slog.Logger) ([]grpc.DialOption, error) {
	src, err := c.source(log, pki.RoleCoordinator)
	if err != nil || src == nil {
		return nil, err
	}
	return []grpc.DialOption{src.DialOption(pki.RoleWorker)}, nil
}

// workerTLS returns a worker's server options (mutual TLS and
// pki.WorkerPolicy) and the options of its connections to peers.
func (c *clusterTLSFlags) workerTLS(log *slog.Logger) ([]grpc.ServerOption, []grpc.DialOption, error) {
	src, err := c.source(log, pki.RoleWorker)
	if err != nil || src == nil {
		return nil, nil, err
	}
	return src.ServerOptions(pki.WorkerPolicy()), []grpc.DialOption{src.DialOption(pki.RoleWorker)}, nil
}

// etcdSecurityFlags are the etcd client's TLS and credentials, named as
// etcdctl names them.
type etcdSecurityFlags struct {
	CACert, Cert, Key string
	User              string
}

func (e *etcdSecurityFlags) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.CACert, "etcd-cacert", "", "CA bundle that verifies etcd's server certificate (etcdctl's --cacert); https endpoints without it use the system roots")
	f.StringVar(&e.Cert, "etcd-cert", "", "client certificate for etcd (etcdctl's --cert), with --etcd-key")
	f.StringVar(&e.Key, "etcd-key", "", "key of --etcd-cert (etcdctl's --key)")
	f.StringVar(&e.User, "etcd-user", "", "etcd user name when etcd's auth is enabled; the password comes from $"+etcdPasswordEnv+" only")
}

// apply sets c's TLS and credentials. TLS is used when a file is given or
// an endpoint is https.
func (e *etcdSecurityFlags) apply(c *store.Config) error {
	secure := e.CACert != "" || e.Cert != "" || e.Key != ""
	for _, ep := range c.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			secure = true
		} else if secure {
			return usagef("etcd endpoint %q is not https:// but --etcd-cacert/--etcd-cert/--etcd-key are set", ep)
		}
	}
	if secure {
		tc, err := store.ClientTLS(e.CACert, e.Cert, e.Key)
		if err != nil {
			return usagef("%v", err)
		}
		c.TLS = tc
	}
	c.Username, c.Password = e.User, os.Getenv(etcdPasswordEnv)
	if c.Password != "" && c.Username == "" {
		return usagef("$%s is set but --etcd-user is not", etcdPasswordEnv)
	}
	return nil
}

// etcdServerFlags make the coordinator's embedded etcd serve TLS.
type etcdServerFlags struct {
	Cert, Key, CACert string
}

func (e *etcdServerFlags) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.Cert, "etcd-server-cert", "", "server certificate of the embedded etcd (with --etcd-server-key and --etcd-server-cacert): it then serves https, requires client certificates, and may listen beyond loopback")
	f.StringVar(&e.Key, "etcd-server-key", "", "key of --etcd-server-cert")
	f.StringVar(&e.CACert, "etcd-server-cacert", "", "CA bundle the embedded etcd's clients' certificates must chain to")
}

// apply sets ec's TLS and its client URL's scheme from listen (host:port);
// client is the coordinator's own etcd client, which then needs a
// certificate.
func (e *etcdServerFlags) apply(ec *etcdembed.Config, listen string, client *etcdSecurityFlags) error {
	if e.Cert == "" && e.Key == "" && e.CACert == "" {
		ec.ClientURL = "http://" + listen
		return nil
	}
	if e.Cert == "" || e.Key == "" || e.CACert == "" {
		return usagef("--etcd-server-cert, --etcd-server-key and --etcd-server-cacert go together")
	}
	if client.Cert == "" || client.CACert == "" {
		return usagef("with --etcd-server-cert the coordinator's own etcd client needs --etcd-cacert, --etcd-cert and --etcd-key")
	}
	ec.ClientURL = "https://" + listen
	ec.TLS = &etcdembed.ServerTLS{CertFile: e.Cert, KeyFile: e.Key, ClientCAFile: e.CACert}
	return nil
}

// modelRootFlags confine a worker's model_dir.
type modelRootFlags struct {
	Roots []string
}

func (m *modelRootFlags) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&m.Roots, "model-root", nil, "directory tree the worker may load models from (repeatable); model_dir outside every root is refused with PERMISSION_DENIED. Without it any path is allowed")
}

// roots returns the roots, warning when there are none.
func (m *modelRootFlags) roots(log *slog.Logger) ([]string, error) {
	if len(m.Roots) == 0 {
		log.Warn("no --model-root: the worker loads model_dir from any path it can read")
		return nil, nil
	}
	for _, r := range m.Roots {
		if fi, err := os.Stat(r); err != nil || !fi.IsDir() {
			return nil, usagef("--model-root %q is not a directory", r)
		}
	}
	return m.Roots, nil
}

// localTLSFlags are `moemesh local`'s: an ephemeral CA and mutual TLS
// among its own processes unless --insecure-cluster.
type localTLSFlags struct {
	Insecure  bool
	pki       *pki.LocalPKI
	gossipKey string // file of the memberlist key
}

func (l *localTLSFlags) AddFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&l.Insecure, "insecure-cluster", false, "run the local workers' services and gossip in plaintext instead of mutual TLS with an ephemeral CA and an encrypted memberlist")
}

// setup makes the ephemeral PKI for workers processes under a new
// temporary directory and points coord at its coordinator certificate; the
// returned function removes the directory. The CA key is never written.
func (l *localTLSFlags) setup(coord *clusterTLSFlags, workers int) (func(), error) {
	if l.Insecure {
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "moemesh-pki-")
	if err != nil {
		return func() {}, err
	}
	done := func() { os.RemoveAll(dir) }
	if l.pki, err = pki.NewLocal(dir, workers); err != nil {
		done()
		return func() {}, err
	}
	coord.Dir = dirOf(l.pki.Coordinator)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		done()
		return func() {}, err
	}
	l.gossipKey = filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(l.gossipKey, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		done()
		return func() {}, err
	}
	coord.GossipKeyFile = l.gossipKey
	return done, nil
}

// workerArgs are worker i's flags for the PKI.
func (l *localTLSFlags) workerArgs(i int) []string {
	if l.pki == nil {
		return nil
	}
	return []string{"--cluster-tls-dir", dirOf(l.pki.Workers[i]), "--gossip-key-file", l.gossipKey}
}

// dirOf is the directory of a certificate set made by pki.FilesIn.
func dirOf(f pki.Files) string { return filepath.Dir(f.Cert) }
