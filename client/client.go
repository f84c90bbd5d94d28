package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client: closed")

// Client talks to a moemesh cluster through one or several coordinator
// addresses. Only the leading coordinator serves; the client keeps using
// the address that answered last and moves to the next one when an RPC
// fails with UNAVAILABLE or cannot connect. A Client is safe for
// concurrent use; Close it when done.
type Client struct {
	addrs []string
	conns []*grpc.ClientConn
	rpcs  []pb.InferenceServiceClient
	opts  options

	cur    atomic.Int64 // index of the address believed to lead
	closed atomic.Bool
	mu     sync.Mutex // guards Close
}

// Dial returns a Client for the coordinators at addrs ("host:port", or any
// gRPC target). It does not wait for a connection: connection failures
// surface, and are retried, on the first calls.
func Dial(addrs []string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no coordinator address", ErrConfig)
	}
	for i, a := range addrs {
		if strings.TrimSpace(a) == "" {
			return nil, fmt.Errorf("%w: address %d is empty", ErrConfig, i)
		}
	}
	tc, err := o.transportTLS()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Reconnect on the client's own schedule, not gRPC's 1 s..120 s.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: o.retry.InitialBackoff, Multiplier: o.retry.Multiplier,
				Jitter: o.retry.Jitter, MaxDelay: o.retry.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if o.apiKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{key: o.apiKey, secure: tc != nil}))
	}
	dial = append(dial, o.dialOpts...)
	c := &Client{addrs: append([]string(nil), addrs...), opts: o}
	for _, a := range c.addrs {
		cc, err := grpc.NewClient(a, dial...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: address %q: %v", ErrConfig, a, err)
		}
		c.conns = append(c.conns, cc)
		c.rpcs = append(c.rpcs, pb.NewInferenceServiceClient(cc))
	}
	return c, nil
}

// Close closes every connection; streams in flight end with CANCELLED.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed.Store(true)
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = nil
	return errors.Join(errs...)
}

// bearer sends the API key as "authorization: Bearer <key>".
type bearer struct {
	key    string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

// RequireTransportSecurity is false only when the caller chose plaintext.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// pick returns the index of the address to try.
func (c *Client) pick() int { return int(c.cur.Load()) }

// failed moves on from address i, unless another call already did.
func (c *Client) failed(i int) {
	c.cur.CompareAndSwap(int64(i), int64((i+1)%len(c.addrs)))
}

// retryable reports an error worth another try, maybe elsewhere:
// UNAVAILABLE is what a standby, a shutting-down leader and a connection
// failure all answer.
func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

// retrier counts consecutive failures of one call and paces its retries.
type retrier struct {
	c        *Client
	failures int
	since    time.Time // first failure since the last progress
	last     error
}

// progress resets the count after a response arrived.
func (r *retrier) progress() { r.failures, r.last = 0, nil }

// wait records a retryable failure and pauses before the next try: no
// pause while addresses of this round are untried, then exponential
// backoff with jitter. It returns the error to give up with, if any.
func (r *retrier) wait(ctx context.Context, err error) error {
	p := r.c.opts.retry
	if r.failures == 0 {
		r.since = time.Now()
	}
	r.failures++
	r.last = err
	if p.MaxRetryTime > 0 && time.Since(r.since) >= p.MaxRetryTime {
		return status.Errorf(codes.Unavailable, "client: gave up after %d tries in %v: %v", r.failures, p.MaxRetryTime, err)
	}
	n := len(r.c.addrs)
	if r.failures%n != 0 {
		return r.ctxErr(ctx)
	}
	d := backoffDelay(p, r.failures/n-1, rand.Float64())
	if p.MaxRetryTime > 0 {
		d = min(d, time.Until(r.since.Add(p.MaxRetryTime)))
	}
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return r.ctxErr(ctx)
	case <-t.C:
		return nil
	}
}

// ctxErr is the context's error as a status, naming the last failure.
func (r *retrier) ctxErr(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return ctxStatus(ctx, r.last)
}

// ctxStatus turns a done context into a status error that names the last
// failure seen, if any.
func ctxStatus(ctx context.Context, last error) error {
	st := status.FromContextError(ctx.Err())
	if last != nil {
		return status.Errorf(st.Code(), "client: %v (last error: %v)", ctx.Err(), last)
	}
	return st.Err()
}

// backoffDelay is the pause after round (0-based) of failures, with u in
// [0, 1) choosing the jitter.
func backoffDelay(p RetryPolicy, round int, u float64) time.Duration {
	d := float64(p.InitialBackoff) * math.Pow(p.Multiplier, float64(round))
	d = min(d, float64(p.MaxBackoff))
	d *= 1 + p.Jitter*(2*u-1)
	return time.Duration(d)
}

// unary runs call against the leading address with retries and failover.
func unary[T any](ctx context.Context, c *Client, call func(context.Context, pb.InferenceServiceClient) (T, error)) (T, error) {
	var zero T
	if c.closed.Load() {
		return zero, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.callTimeout)
		defer cancel()
	}
	r := retrier{c: c}
	for {
		i := c.pick()
		out, err := call(ctx, c.rpcs[i])
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return zero, ctxStatus(ctx, err)
		}
		if !retryable(err) {
			return zero, err
		}
		c.failed(i)
		if err := r.wait(ctx, err); err != nil {
			return zero, err
		}
	}
}

// Tokenize returns the token ids of a prompt or a rendered chat.
func (c *Client) Tokenize(ctx context.Context, req *pb.TokenizeRequest) (*pb.TokenizeResponse, error) {
	return unary(ctx, c, func(ctx context.Context, s pb.InferenceServiceClient) (*pb.TokenizeResponse, error) {
		return s.Tokenize(ctx, req)
	})
}

// Detokenize returns the text of token ids.
func (c *Client) Detokenize(ctx context.Context, req *pb.DetokenizeRequest) (*pb.DetokenizeResponse, error) {
	return unary(ctx, c, func(ctx context.Context, s pb.InferenceServiceClient) (*pb.DetokenizeResponse, error) {
		return s.Detokenize(ctx, req)
	})
}

// ListModels lists the served models.
func (c *Client) ListModels(ctx context.Context) (*pb.ListModelsResponse, error) {
	return unary(ctx, c, func(ctx context.Context, s pb.InferenceServiceClient) (*pb.ListModelsResponse, error) {
		return s.ListModels(ctx, &pb.ListModelsRequest{})
	})
}
