package serving

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// auth checks bearer keys and counts each key's running streams. Keys are
// kept only as SHA-256 digests and never logged.
type auth struct {
	digests    [][sha256.Size]byte
	maxStreams int

	mu      sync.Mutex
	running map[int]int // key index (-1: no keys) → streams
}

func newAuth(keys []string, maxStreams int) *auth {
	a := &auth{maxStreams: maxStreams, running: map[int]int{}}
	for _, k := range keys {
		a.digests = append(a.digests, sha256.Sum256([]byte(k)))
	}
	return a
}

type keyIndex struct{}

// check returns the index of the key in an Authorization header value
// ("Bearer KEY"); -1 when the server has no keys. Every key is compared,
// in constant time, so the time taken tells nothing about the keys.
func (a *auth) check(header string) (int, error) {
	if len(a.digests) == 0 {
		return -1, nil
	}
	key, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		if header == "" {
			return 0, fmt.Errorf("%w: send the header \"Authorization: Bearer <key>\"", ErrUnauthenticated)
		}
		return 0, fmt.Errorf("%w: the Authorization header is not \"Bearer <key>\"", ErrUnauthenticated)
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(key)))
	found := -1
	for i := range a.digests {
		if subtle.ConstantTimeCompare(d[:], a.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("%w: the key is not accepted", ErrUnauthenticated)
	}
	return found, nil
}

// acquire takes one of the stream slots of ctx's key; the returned
// function gives it back.
func (a *auth) acquire(ctx context.Context) (func(), error) {
	if a.maxStreams == 0 {
		return func() {}, nil
	}
	k, ok := ctx.Value(keyIndex{}).(int)
	if !ok {
		k = -1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running[k] >= a.maxStreams {
		return nil, fmt.Errorf("%w: this key already runs %d streams, the limit", ErrTooManyStreams, a.maxStreams)
	}
	a.running[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			if a.running[k]--; a.running[k] == 0 {
				delete(a.running, k)
			}
			a.mu.Unlock()
		})
	}, nil
}

// protected reports a gRPC method that needs a key: the inference
// service's, not health or reflection.
func protected(method string) bool {
	return strings.HasPrefix(method, "/moemesh.inference.v1.")
}

func (a *auth) grpcCtx(ctx context.Context, method string) (context.Context, error) {
	if !protected(method) {
		return ctx, nil
	}
	var h string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			h = v[0]
		}
	}
	k, err := a.check(h)
	if err != nil {
		return nil, toStatus(err)
	}
	return context.WithValue(ctx, keyIndex{}, k), nil
}

func (a *auth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.grpcCtx(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *auth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.grpcCtx(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &ctxStream{ss, ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
