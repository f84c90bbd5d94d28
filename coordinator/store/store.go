package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/coordinator/internal/zapslog"
)

// Errors returned by Store, wrapped with %w (match them with errors.Is).
var (
	// ErrNotFound: the key is absent (no model, no placement, no leader).
	ErrNotFound = errors.New("store: not found")
	// ErrNotLeader: the write's leader no longer holds the election key.
	ErrNotLeader = errors.New("store: not the leader")
	// ErrStaleEpoch: a placement epoch not above the current one.
	ErrStaleEpoch = errors.New("store: placement epoch not newer than the current one")
	// ErrExists: a registration under an id that is already registered.
	ErrExists = errors.New("store: already registered")
	// ErrFenced: the registration's lease is gone (revoked or expired).
	ErrFenced = errors.New("store: lease gone (fenced)")
	// ErrUnavailable: etcd did not answer in time.
	ErrUnavailable = errors.New("store: etcd unavailable")
)

// Key names under Config.Prefix.
const (
	KeyWorkers          = "workers/"          // + id: WorkerRecord on the worker's lease
	KeyCoordinators     = "coordinators/"     // + id: CoordinatorRecord on the coordinator's lease
	KeyModel            = "model"             // ModelManifest
	KeyPlacement        = "placement/"        // + epoch as 20 digits: PlacementRecord
	KeyPlacementCurrent = "placement/current" // the newest PlacementRecord
	KeyElection         = "election"          // concurrency.Election prefix of the coordinators
	KeyPlacementNext    = "placement/next"    // the epoch being prepared by a live change
	KeyStatsExperts     = "stats/experts"     // + "/" + worker id: ExpertStatsRecord on the worker's lease
	KeyCordoned         = "cordoned/"         // + worker id: CordonRecord (drained workers)
)

// Config configures a Store.
type Config struct {
	// Endpoints are the etcd client URLs.
	Endpoints []string
	// Prefix is put before every key; it must end in "/".
	Prefix string
	// DialTimeout bounds Open's first contact with etcd.
	DialTimeout time.Duration
	// RequestTimeout bounds each request whose ctx has no deadline.
	RequestTimeout time.Duration
	// TLS configures the client's TLS (the endpoints are then https://);
	// nil dials plaintext. ClientTLS builds one from etcdctl-style files.
	TLS *tls.Config
	// Username and Password authenticate to an etcd with auth enabled;
	// empty Username sends none. The password is never logged.
	Username, Password string
	// Log receives the store's logs and the etcd client's errors; nil is
	// slog.Default().
	Log *slog.Logger
}

// DefaultConfig returns a Config for a local etcd.
func DefaultConfig() Config {
	return Config{
		Endpoints:      []string{"http://127.0.0.1:2379"}, // etcd's default client URL
		Prefix:         "/moemesh/",                       // leaves the rest of a shared etcd alone
		DialTimeout:    5 * time.Second,                   // fail a start against a dead etcd quickly
		RequestTimeout: 5 * time.Second,                   // several election timeouts: rides out a leader change
		TLS:            nil,                               // plaintext: the embedded etcd listens on loopback only
		Username:       "",                                // etcd's auth is off unless the operator enables it
		Password:       "",
		Log:            slog.Default(), // the process's logger
	}
}

// Store is the typed control-plane state in etcd. Its methods are safe for
// concurrent use.
type Store struct {
	cli    *clientv3.Client
	prefix string
	reqTO  time.Duration
	log    *slog.Logger
	codec  protojson.MarshalOptions
	decode protojson.UnmarshalOptions
}

// Open validates cfg and connects to etcd, waiting at most DialTimeout for
// a first answer (ErrUnavailable otherwise).
func Open(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("store: Config.Endpoints is empty; give at least one etcd client URL (http://127.0.0.1:2379)")
	}
	for _, ep := range cfg.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return nil, fmt.Errorf("store: Config.Endpoints %q holds an empty endpoint", cfg.Endpoints)
		}
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("store: Config.Prefix %q must start and end with \"/\" (default \"/moemesh/\")", cfg.Prefix)
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("store: Config.Password without Username; give both (etcd's --user NAME:PASSWORD)")
	}
	if cfg.DialTimeout <= 0 || cfg.RequestTimeout <= 0 {
		return nil, fmt.Errorf("store: Config.DialTimeout %v and RequestTimeout %v must be positive (default 5s)", cfg.DialTimeout, cfg.RequestTimeout)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zapslog.New(log.With("component", "etcd-client"), zapcore.ErrorLevel),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			// Reconnect within a second of etcd coming back, so leases
			// are kept alive again well inside their TTL.
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("store: etcd client for %q: %w", cfg.Endpoints, err)
	}
	s := &Store{
		cli:    cli,
		prefix: cfg.Prefix,
		reqTO:  cfg.RequestTimeout,
		log:    log,
		decode: protojson.UnmarshalOptions{DiscardUnknown: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(ctx, s.prefix+KeyModel, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, s.fail(ctx, fmt.Sprintf("reach etcd at %q", cfg.Endpoints), err)
	}
	return s, nil
}

// Close closes the etcd client. Registrations and leaders made through the
// store stop being kept alive; close them first to release their leases at
// once.
func (s *Store) Close() error { return s.cli.Close() }

// Client returns the etcd client, for what the typed API does not cover.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix (ends in "/").
func (s *Store) Prefix() string { return s.prefix }

// reqCtx applies RequestTimeout when ctx has no deadline.
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.reqTO)
}

// fail wraps err from etcd: timeouts and unreachable servers become
// ErrUnavailable (still matching the original error).
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	switch code := status.Code(err); {
	case errors.Is(err, context.DeadlineExceeded), code == codes.DeadlineExceeded, code == codes.Unavailable,
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeout):
		return fmt.Errorf("store: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func (s *Store) marshal(m proto.Message) (string, error) {
	b, err := s.codec.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("store: encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return string(b), nil
}

func (s *Store) unmarshal(key string, b []byte, m proto.Message) error {
	if err := s.decode.Unmarshal(b, m); err != nil {
		return fmt.Errorf("store: decode %s: %w", key, err)
	}
	return nil
}

// get reads key into m; ErrNotFound when absent.
func (s *Store) get(ctx context.Context, op, key string, m proto.Message) (*clientv3.GetResponse, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if len(resp.Kvs) == 0 {
		return resp, fmt.Errorf("store: %s: %s: %w", op, key, ErrNotFound)
	}
	return resp, s.unmarshal(key, resp.Kvs[0].Value, m)
}

// validID rejects ids that would not make one key segment.
func validID(what, id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("store: %s id %q must be non-empty and hold no \"/\"", what, id)
	}
	return nil
}

// ttlSeconds converts a TTL to etcd's whole seconds, rounding up.
func ttlSeconds(ttl time.Duration) (int64, error) {
	if ttl < time.Second {
		return 0, fmt.Errorf("store: ttl %v is below etcd's 1s lease granularity", ttl)
	}
	return int64((ttl + time.Second - 1) / time.Second), nil
}

// sleepCtx waits d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextBackoff doubles d up to 2s.
func nextBackoff(d time.Duration) time.Duration {
	return min(2*d, 2*time.Second)
}
