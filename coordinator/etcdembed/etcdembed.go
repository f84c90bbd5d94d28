package etcdembed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/moemesh/moemesh/coordinator/internal/zapslog"
)

// Config configures the embedded etcd server.
type Config struct {
	// Dir is the data directory (required). Starting again on the same Dir
	// and URLs resumes the same one-member cluster with its data.
	Dir string
	// Name is the member name; it must stay the same across restarts on Dir.
	Name string
	// ClientURL is where clients connect; PeerURL is the (unused, one-member)
	// raft URL. Without TLS both must be http on a loopback host; with TLS
	// ClientURL is https on any host (PeerURL stays loopback). Port 0 picks
	// a free port at Start; Endpoints reports the one chosen.
	ClientURL, PeerURL string
	// TLS, when set, serves ClientURL over TLS and requires every client
	// to present a certificate signed by TLS.ClientCAFile.
	TLS *ServerTLS
	// Log receives etcd's error-level logs; nil drops them.
	Log *slog.Logger
	// StartTimeout bounds the wait for the server to be ready.
	StartTimeout time.Duration
}

// ServerTLS are the files of the client listener's TLS (etcd's
// --cert-file, --key-file and --trusted-ca-file with --client-cert-auth).
type ServerTLS struct {
	// CertFile and KeyFile are the server's certificate and key. etcd's
	// own gateway dials the server with them, so the certificate must
	// allow client auth too (the cluster PKI's coordinator and worker
	// certificates do).
	CertFile, KeyFile string
	// ClientCAFile holds the CAs client certificates must chain to.
	ClientCAFile string
}

func (t *ServerTLS) validate() error {
	if t.CertFile == "" || t.KeyFile == "" || t.ClientCAFile == "" {
		return fmt.Errorf("etcdembed: Config.TLS needs CertFile, KeyFile and ClientCAFile (got %q, %q, %q)", t.CertFile, t.KeyFile, t.ClientCAFile)
	}
	// etcd reads the files only at the first handshake: check them now.
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		return fmt.Errorf("etcdembed: Config.TLS certificate %s, key %s: %w", t.CertFile, t.KeyFile, err)
	}
	ca, err := os.ReadFile(t.ClientCAFile)
	if err != nil {
		return fmt.Errorf("etcdembed: Config.TLS: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return fmt.Errorf("etcdembed: Config.TLS: %s holds no PEM certificate", t.ClientCAFile)
	}
	return nil
}

// DefaultConfig returns a Config for a loopback-only, one-member etcd in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:          dir,                  // caller's data directory
		Name:         "moemesh",            // stable, so restarts on dir find their member
		ClientURL:    "http://127.0.0.1:0", // loopback only: nothing outside the machine reaches it; free port
		PeerURL:      "http://127.0.0.1:0", // loopback only: one member has no peers
		Log:          slog.Default(),       // errors only (etcd is chatty at info)
		StartTimeout: 30 * time.Second,     // a cold start with WAL replay takes well under this
	}
}

// Etcd is a running embedded etcd server.
type Etcd struct {
	etcd      *embed.Etcd
	endpoints []string
	closing   chan struct{} // closed by Close: ends the open client streams
	closeOnce sync.Once
}

// Start starts the server and waits until it serves clients, StartTimeout
// passes, or ctx ends.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	if cfg.Dir == "" {
		return nil, errors.New("etcdembed: Config.Dir is required (the data directory)")
	}
	if cfg.Name == "" {
		return nil, errors.New("etcdembed: Config.Name is required (use DefaultConfig)")
	}
	if cfg.StartTimeout <= 0 {
		return nil, fmt.Errorf("etcdembed: Config.StartTimeout %v must be positive", cfg.StartTimeout)
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.validate(); err != nil {
			return nil, err
		}
	}
	curl, err := listenURL("ClientURL", cfg.ClientURL, cfg.TLS != nil)
	if err != nil {
		return nil, err
	}
	purl, err := listenURL("PeerURL", cfg.PeerURL, false)
	if err != nil {
		return nil, err
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	if cfg.TLS != nil {
		ec.ClientTLSInfo.CertFile = cfg.TLS.CertFile
		ec.ClientTLSInfo.KeyFile = cfg.TLS.KeyFile
		ec.ClientTLSInfo.TrustedCAFile = cfg.TLS.ClientCAFile
		ec.ClientTLSInfo.ClientCertAuth = true
	}
	ec.LogLevel = "error"
	ec.Logger = "zap"
	closing := make(chan struct{})
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapslog.NewUntil(cfg.Log, zapcore.ErrorLevel, closing))
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainStreamInterceptor(endOnClose(closing))}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start etcd in %s (client %s, peer %s): %w", cfg.Dir, curl, purl, err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		close(closing)
		e.Close()
		return nil, fmt.Errorf("etcdembed: etcd in %s failed while starting: %w", cfg.Dir, err)
	case <-timer.C:
		close(closing)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcdembed: etcd in %s not ready within %v (is the data dir another cluster's?)", cfg.Dir, cfg.StartTimeout)
	case <-ctx.Done():
		close(closing)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcdembed: start etcd in %s: %w", cfg.Dir, ctx.Err())
	}
	return &Etcd{etcd: e, endpoints: []string{curl.String()}, closing: closing}, nil
}

// Endpoints returns the client URLs to give clientv3 (or store.Config).
func (e *Etcd) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Close stops the server and releases its ports and data dir; it may be
// called more than once. Clients' open watches and lease keepalives end
// with an error (they reconnect when a server is back).
func (e *Etcd) Close() error {
	e.closeOnce.Do(func() {
		close(e.closing)
		e.etcd.Close()
	})
	return nil
}

// endOnClose cancels every client stream (watches, lease keepalives) once
// closing is closed. Without it etcd's graceful stop waits its full request
// timeout (over 5s) for streams that never end on their own.
func endOnClose(closing <-chan struct{}) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		go func() {
			select {
			case <-closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

// ctxStream is a server stream with its context replaced.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// listenURL parses an http URL on a loopback host (an https URL on any
// host when secure) and replaces port 0 by a free port.
func listenURL(field, raw string, secure bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: Config.%s %q: %w", field, raw, err)
	}
	scheme := "http"
	if secure {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(u.Host)
	if u.Scheme != scheme || err != nil || u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("etcdembed: Config.%s %q: want %s://HOST:PORT", field, raw, scheme)
	}
	if ip := net.ParseIP(host); !secure && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("etcdembed: Config.%s %q: without TLS the embedded etcd listens on loopback only (127.0.0.1, ::1, localhost)", field, raw)
	}
	if port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("etcdembed: Config.%s: find a free port on %s: %w", field, host, err)
		}
		u.Host = l.Addr().String()
		l.Close()
	}
	u.Path = ""
	return u, nil
}
