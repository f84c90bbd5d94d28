package collective

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(peerEnv); role != "" {
		// This process is the far end of a two-process benchmark.
		os.Exit(runPeer(role))
	}
	goleak.VerifyTestMain(m)
}

var attn = moemeshv1.Phase_PHASE_ALLREDUCE_ATTN

// testConfig is a config with test-sized timers and a silent logger.
func testConfig() MeshConfig {
	c := DefaultMeshConfig()
	c.Timeout = 20 * time.Second
	c.Logger = slog.New(slog.DiscardHandler)
	// The protocol tests speak the two-round all-reduce; the one-round one
	// has its own test.
	c.OneRoundAllReduceBytes = 0
	return c
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

// newCluster starts n meshes on loopback listeners, each with its own
// server, and closes them when the test ends. mod may adjust each config.
func newCluster(t testing.TB, n int, mod func(i int, c *MeshConfig)) []*Mesh {
	t.Helper()
	lis := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lis {
		lis[i] = listen(t)
		addrs[i] = lis[i].Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	meshes := make([]*Mesh, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c := testConfig()
		c.Self, c.Addrs, c.Epoch, c.Listener = i, addrs, 7, lis[i]
		if mod != nil {
			mod(i, &c)
		}
		wg.Go(func() { meshes[i], errs[i] = NewMesh(ctx, c) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range meshes {
			if m != nil {
				m.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("NewMesh(worker %d): %v", i, err)
		}
	}
	return meshes
}

// runAll runs f for every listed member concurrently and returns the errors
// indexed like members.
func runAll(members []int, f func(w int) error) []error {
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, w := range members {
		wg.Go(func() { errs[i] = f(w) })
	}
	wg.Wait()
	return errs
}

func workers(n int) []int {
	g := make([]int, n)
	for i := range g {
		g[i] = i
	}
	return g
}

// fakePeer is a hand-driven worker end used to send frames a real mesh
// never would.
type fakePeer struct {
	conn   *grpc.ClientConn
	stream moemeshv1.PeerService_ExchangeClient
	cancel context.CancelFunc
}

// dialFake connects to addr as worker from of a mesh of size workers.
func dialFake(t *testing.T, addr string, epoch uint64, from, to, size int) *fakePeer {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakePeer{conn: conn, cancel: cancel}
	t.Cleanup(f.close)
	client := moemeshv1.NewPeerServiceClient(conn)
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	for {
		_, err = client.Hello(hctx, &moemeshv1.HelloRequest{
			ProtocolVersion: ProtocolVersion, MeshEpoch: epoch, FromWorker: uint32(from),
			ToWorker: uint32(to), MeshSize: uint32(size), WireDtype: F32,
		}, grpc.WaitForReady(true))
		if err == nil || hctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Hello: %v", err)
	}
	sctx := metadata.AppendToOutgoingContext(ctx, mdEpoch, strconv.FormatUint(epoch, 10), mdFrom, strconv.Itoa(from))
	f.stream, err = client.Exchange(sctx)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if _, err := f.stream.Header(); err != nil {
		t.Fatalf("Exchange header: %v", err)
	}
	return f
}

func (f *fakePeer) close() {
	f.cancel()
	_ = f.conn.Close()
}
