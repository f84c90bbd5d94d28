package control

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// connCache keeps one client connection per worker address for Health
// probes. Safe for concurrent use.
type connCache struct {
	opts  []grpc.DialOption // after plaintext: credentials among them replace it
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newConnCache(opts []grpc.DialOption) *connCache {
	return &connCache{
		opts:  append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...),
		conns: map[string]*grpc.ClientConn{},
	}
}

// health asks addr for its Health within timeout; nil when it does not
// answer.
func (c *connCache) health(ctx context.Context, addr string, timeout time.Duration) *pb.HealthResponse {
	c.mu.Lock()
	cc := c.conns[addr]
	if cc == nil {
		var err error
		cc, err = grpc.NewClient(addr, c.opts...)
		if err != nil {
			c.mu.Unlock()
			return nil
		}
		c.conns[addr] = cc
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h, err := pb.NewWorkerServiceClient(cc).Health(ctx, &pb.HealthRequest{})
	if err != nil {
		return nil
	}
	return h
}

func (c *connCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.conns {
		cc.Close()
		delete(c.conns, a)
	}
}
