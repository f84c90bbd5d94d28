package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// ErrInterrupted reports an operation stream (ApplyRebalance, Drain) that
// was cut after the operation started, before its last phase: the
// operation may still finish or abort on the cluster, and GetStatus tells
// which. The error wraps the cause's text.
var ErrInterrupted = errors.New("client: operation stream cut after the operation started; its outcome is unknown")

// AdminClient talks to the admin API (moemesh.admin.v1) of a cluster's
// coordinators. Each call tries the endpoints once, in order, starting
// with the one that answered last: UNAVAILABLE (a standby, a coordinator
// shutting down, a connection failure) moves to the next; any other
// answer is final. A streamed operation moves on only before its first
// message: after that the operation runs, and retrying it elsewhere could
// start it twice. An AdminClient is safe for concurrent use; Close it
// when done.
type AdminClient struct {
	addrs []string
	conns []*grpc.ClientConn
	rpcs  []adminv1.AdminServiceClient
	opts  options

	cur    atomic.Int64 // the endpoint that answered last
	closed atomic.Bool
	mu     sync.Mutex // guards Close
}

// DialAdmin returns an AdminClient for the coordinators at endpoints. It
// takes the options of Dial: the TLS ones (WithTLSConfig, WithCAFile,
// WithInsecure), WithAPIKey (which sends the admin token or an API key as
// the bearer token), WithCallTimeout (the deadline of a unary call whose
// context has none) and WithDialOptions; WithRetryPolicy has no effect,
// since each call makes a single pass over the endpoints. It does not
// wait for a connection.
func DialAdmin(endpoints []string, opts ...Option) (*AdminClient, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no coordinator endpoint", ErrConfig)
	}
	for i, a := range endpoints {
		if strings.TrimSpace(a) == "" {
			return nil, fmt.Errorf("%w: endpoint %d is empty", ErrConfig, i)
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
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.apiKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{key: o.apiKey, secure: tc != nil}))
	}
	dial = append(dial, o.dialOpts...)
	c := &AdminClient{addrs: append([]string(nil), endpoints...), opts: o}
	for _, a := range c.addrs {
		cc, err := grpc.NewClient(a, dial...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: endpoint %q: %v", ErrConfig, a, err)
		}
		c.conns = append(c.conns, cc)
		c.rpcs = append(c.rpcs, adminv1.NewAdminServiceClient(cc))
	}
	return c, nil
}

// Close closes every connection; streams in flight end with CANCELLED.
func (c *AdminClient) Close() error {
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

// Endpoints returns the endpoints in the order given to DialAdmin.
func (c *AdminClient) Endpoints() []string { return append([]string(nil), c.addrs...) }

// pass calls try on each endpoint once, from the one that answered last,
// until one gives an answer other than UNAVAILABLE. It returns that
// answer, or UNAVAILABLE naming every endpoint's failure.
func (c *AdminClient) pass(ctx context.Context, try func(ctx context.Context, i int) error) error {
	if c.closed.Load() {
		return ErrClosed
	}
	start := int(c.cur.Load())
	var failures []string
	for k := range c.addrs {
		i := (start + k) % len(c.addrs)
		err := try(ctx, i)
		if err == nil || !retryable(err) {
			c.cur.Store(int64(i))
			return err
		}
		if ctx.Err() != nil {
			return ctxStatus(ctx, err)
		}
		failures = append(failures, fmt.Sprintf("%s: %s", c.addrs[i], status.Convert(err).Message()))
	}
	return status.Errorf(codes.Unavailable, "client: no coordinator answered (%s)", strings.Join(failures, "; "))
}

// adminUnary runs one unary RPC with failover.
func adminUnary[T any](ctx context.Context, c *AdminClient, call func(context.Context, adminv1.AdminServiceClient) (T, error)) (T, error) {
	var out T
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.callTimeout)
		defer cancel()
	}
	err := c.pass(ctx, func(ctx context.Context, i int) error {
		r, err := call(ctx, c.rpcs[i])
		if err == nil {
			out = r
		}
		return err
	})
	return out, err
}

// GetStatus describes the cluster; any coordinator answers it.
func (c *AdminClient) GetStatus(ctx context.Context, req *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	return adminUnary(ctx, c, func(ctx context.Context, s adminv1.AdminServiceClient) (*adminv1.GetStatusResponse, error) {
		return s.GetStatus(ctx, req)
	})
}

// GetPlacement returns the serving epoch's expert placement.
func (c *AdminClient) GetPlacement(ctx context.Context, req *adminv1.GetPlacementRequest) (*adminv1.GetPlacementResponse, error) {
	return adminUnary(ctx, c, func(ctx context.Context, s adminv1.AdminServiceClient) (*adminv1.GetPlacementResponse, error) {
		return s.GetPlacement(ctx, req)
	})
}

// GetExpertStats returns the window's routed-token counts and imbalance.
func (c *AdminClient) GetExpertStats(ctx context.Context, req *adminv1.GetExpertStatsRequest) (*adminv1.GetExpertStatsResponse, error) {
	return adminUnary(ctx, c, func(ctx context.Context, s adminv1.AdminServiceClient) (*adminv1.GetExpertStatsResponse, error) {
		return s.GetExpertStats(ctx, req)
	})
}

// PlanRebalance computes a rebalance without applying it.
func (c *AdminClient) PlanRebalance(ctx context.Context, req *adminv1.PlanRebalanceRequest) (*adminv1.PlanRebalanceResponse, error) {
	return adminUnary(ctx, c, func(ctx context.Context, s adminv1.AdminServiceClient) (*adminv1.PlanRebalanceResponse, error) {
		return s.PlanRebalance(ctx, req)
	})
}

// Uncordon returns a cordoned worker to the pool. It needs the admin token.
func (c *AdminClient) Uncordon(ctx context.Context, req *adminv1.UncordonRequest) (*adminv1.UncordonResponse, error) {
	return adminUnary(ctx, c, func(ctx context.Context, s adminv1.AdminServiceClient) (*adminv1.UncordonResponse, error) {
		return s.Uncordon(ctx, req)
	})
}

// ApplyRebalance applies a plan from PlanRebalance and returns its
// progress stream once the first message arrived (an error before it,
// UNAVAILABLE from every endpoint included, is returned here). It needs
// the admin token. The stream is bounded by ctx only: give it a deadline.
func (c *AdminClient) ApplyRebalance(ctx context.Context, req *adminv1.ApplyRebalanceRequest) (*OperationStream, error) {
	return c.operation(ctx, func(ctx context.Context, s adminv1.AdminServiceClient) (grpc.ServerStreamingClient[adminv1.OperationProgress], error) {
		return s.ApplyRebalance(ctx, req)
	})
}

// Drain moves a worker's experts and heads away and cordons it, as
// ApplyRebalance does with a plan.
func (c *AdminClient) Drain(ctx context.Context, req *adminv1.DrainRequest) (*OperationStream, error) {
	return c.operation(ctx, func(ctx context.Context, s adminv1.AdminServiceClient) (grpc.ServerStreamingClient[adminv1.OperationProgress], error) {
		return s.Drain(ctx, req)
	})
}

// operation opens a progress stream with failover up to its first message.
func (c *AdminClient) operation(ctx context.Context, open func(context.Context, adminv1.AdminServiceClient) (grpc.ServerStreamingClient[adminv1.OperationProgress], error)) (*OperationStream, error) {
	var out *OperationStream
	err := c.pass(ctx, func(ctx context.Context, i int) error {
		sctx, cancel := context.WithCancel(ctx)
		st, err := open(sctx, c.rpcs[i])
		if err != nil {
			cancel()
			return err
		}
		first, err := st.Recv()
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Unavailable, "client: the operation stream ended before its first message")
		}
		if err != nil {
			cancel()
			return err
		}
		out = &OperationStream{st: st, cancel: cancel, first: first}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// OperationStream is the progress of one rebalance or drain. Recv returns
// each message, the last one with phase DONE, then io.EOF. A message with
// phase ABORTED is returned, then an ABORTED status error carrying its
// message. A stream cut before the last phase ends with an error wrapping
// ErrInterrupted. Close it when done reading early.
type OperationStream struct {
	st     grpc.ServerStreamingClient[adminv1.OperationProgress]
	cancel context.CancelFunc
	first  *adminv1.OperationProgress
	last   *adminv1.OperationProgress
	err    error // sticky end
}

// Recv returns the next progress message.
func (s *OperationStream) Recv() (*adminv1.OperationProgress, error) {
	if s.err != nil {
		return nil, s.err
	}
	var m *adminv1.OperationProgress
	if s.first != nil {
		m, s.first = s.first, nil
	} else if s.last != nil && s.last.GetPhase() == adminv1.Phase_PHASE_ABORTED {
		return nil, s.end(status.Errorf(codes.Aborted, "%s aborted: %s", s.last.GetKind(), s.last.GetMessage()))
	} else if s.last != nil && s.last.GetPhase() == adminv1.Phase_PHASE_DONE {
		return nil, s.end(io.EOF)
	} else {
		var err error
		m, err = s.st.Recv()
		if err != nil {
			switch code := status.Code(err); {
			case errors.Is(err, io.EOF):
				err = fmt.Errorf("%w (the stream ended before phase DONE)", ErrInterrupted)
			case code == codes.Unavailable, code == codes.Canceled && s.st.Context().Err() == nil:
				err = fmt.Errorf("%w: %s", ErrInterrupted, status.Convert(err).Message())
			}
			return nil, s.end(err)
		}
	}
	s.last = m
	return m, nil
}

// Last returns the last message received (nil before the first Recv).
func (s *OperationStream) Last() *adminv1.OperationProgress { return s.last }

// Close ends the stream; the operation goes on on the cluster.
func (s *OperationStream) Close() {
	if s.err == nil {
		s.err = ErrClosed
	}
	s.cancel()
}

func (s *OperationStream) end(err error) error {
	s.err = err
	s.cancel()
	return err
}
