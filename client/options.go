package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
)

// ErrConfig reports a bad Dial argument or option.
var ErrConfig = errors.New("client: bad configuration")

// RetryPolicy bounds how the client retries an RPC that failed with
// UNAVAILABLE or a connection failure. The caller's context bounds it too:
// retries stop when the context is done.
type RetryPolicy struct {
	// InitialBackoff is the pause before the second try of the first
	// address after every address failed once.
	InitialBackoff time.Duration
	// MaxBackoff caps the pause between tries.
	MaxBackoff time.Duration
	// Multiplier grows the pause after each round over the addresses.
	Multiplier float64
	// Jitter spreads each pause uniformly over ±Jitter of it, in [0, 1].
	Jitter float64
	// MaxRetryTime bounds the time spent failing without progress (no
	// response received); 0 means only the context bounds it.
	MaxRetryTime time.Duration
}

// DefaultRetryPolicy is what Dial uses unless WithRetryPolicy is given.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		InitialBackoff: 100 * time.Millisecond, // a standby answers at once; a new leader takes a lease TTL
		MaxBackoff:     3 * time.Second,        // keep probing often enough to catch the new leader soon after election
		Multiplier:     2,                      // the usual exponential growth
		Jitter:         0.2,                    // spread the retries of many clients after one failover
		MaxRetryTime:   60 * time.Second,       // several etcd lease TTLs: a failover takes one
	}
}

func (p RetryPolicy) validate() error {
	var errs []error
	if p.InitialBackoff <= 0 {
		errs = append(errs, fmt.Errorf("%w: InitialBackoff %v must be positive", ErrConfig, p.InitialBackoff))
	}
	if p.MaxBackoff < p.InitialBackoff {
		errs = append(errs, fmt.Errorf("%w: MaxBackoff %v must be at least InitialBackoff %v", ErrConfig, p.MaxBackoff, p.InitialBackoff))
	}
	if !(p.Multiplier >= 1) {
		errs = append(errs, fmt.Errorf("%w: Multiplier %v must be at least 1", ErrConfig, p.Multiplier))
	}
	if !(p.Jitter >= 0 && p.Jitter <= 1) {
		errs = append(errs, fmt.Errorf("%w: Jitter %v must be in [0, 1]", ErrConfig, p.Jitter))
	}
	if p.MaxRetryTime < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxRetryTime %v must not be negative", ErrConfig, p.MaxRetryTime))
	}
	return errors.Join(errs...)
}

// Option configures Dial.
type Option func(*options) error

type options struct {
	tls         *tls.Config
	caFile      string
	insecure    bool
	apiKey      string
	callTimeout time.Duration
	retry       RetryPolicy
	dialOpts    []grpc.DialOption
}

func defaultOptions() options {
	return options{
		callTimeout: 30 * time.Second, // unary calls (Tokenize, Detokenize, ListModels) are short; a stuck one must end
		retry:       DefaultRetryPolicy(),
	}
}

// WithTLSConfig uses TLS with cfg (cloned). Without any TLS or plaintext
// option the client uses TLS with the system's root CAs.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) error {
		if cfg == nil {
			return fmt.Errorf("%w: WithTLSConfig(nil)", ErrConfig)
		}
		o.tls = cfg.Clone()
		return nil
	}
}

// WithCAFile uses TLS and trusts the PEM certificates in path (instead of
// the system's roots) to verify the coordinators.
func WithCAFile(path string) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("%w: WithCAFile: empty path", ErrConfig)
		}
		o.caFile = path
		return nil
	}
}

// WithInsecure sends everything in plaintext, the API key included. It
// must be asked for explicitly: the default is TLS.
func WithInsecure() Option {
	return func(o *options) error { o.insecure = true; return nil }
}

// WithAPIKey sends "authorization: Bearer key" with every RPC.
func WithAPIKey(key string) Option {
	return func(o *options) error {
		if key == "" {
			return fmt.Errorf("%w: WithAPIKey: empty key", ErrConfig)
		}
		o.apiKey = key
		return nil
	}
}

// WithCallTimeout sets the deadline of a unary call (Tokenize, Detokenize,
// ListModels), retries included, when its context has none. Streams are
// bounded by their context only: a generation may run for long.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithCallTimeout(%v) must be positive", ErrConfig, d)
		}
		o.callTimeout = d
		return nil
	}
}

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(o *options) error {
		if err := p.validate(); err != nil {
			return err
		}
		o.retry = p
		return nil
	}
}

// WithDialOptions adds gRPC dial options (keepalive, interceptors, a
// custom dialer) after the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) error { o.dialOpts = append(o.dialOpts, opts...); return nil }
}

// transportTLS returns the TLS config to use, or nil for plaintext.
func (o *options) transportTLS() (*tls.Config, error) {
	if o.insecure {
		if o.tls != nil || o.caFile != "" {
			return nil, fmt.Errorf("%w: WithInsecure conflicts with WithTLSConfig and WithCAFile", ErrConfig)
		}
		return nil, nil
	}
	cfg := o.tls
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CA file: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrConfig, o.caFile)
		}
		cfg = cfg.Clone()
		cfg.RootCAs = pool
	}
	return cfg, nil
}
