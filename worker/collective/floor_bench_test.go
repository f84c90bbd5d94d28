package collective

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// The floor benchmarks measure, between two processes on loopback, what one
// exchange costs at each layer of the stack: a raw TCP round trip (the
// floor), a gRPC unary call, a gRPC bidi-stream ping-pong, and the
// collectives themselves at decode-step sizes. The far end is this test
// binary run again with peerEnv set (see runPeer). With
// MOEMESH_BENCH_PIN=1 the peer runs under `taskset -c 1`; run the benchmark
// itself under `taskset -c 0` for one core each.

const peerEnv = "MOEMESH_BENCH_PEER"

// floorSizes are message sizes of a decode step: a few tokens' hidden
// states (4 KB–64 KB) up to a prefill chunk (1 MB).
var floorSizes = []int{4 << 10, 64 << 10, 1 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

// echoDesc is a tiny gRPC service with the protobuf codec: Unary and Bidi
// answer every Frame with itself.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "moemesh.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		f := new(moemeshv1.Frame)
		return f, dec(f)
	}}},
	Streams: []grpc.StreamDesc{{StreamName: "Bidi", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
		for {
			f := new(moemeshv1.Frame)
			if err := st.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := st.SendMsg(f); err != nil {
				return err
			}
		}
	}}},
}

// runPeer is the far end. Role "echo": a TCP echo and the gRPC echo
// service, addresses printed on stdout. Role "mesh OP BYTES": worker 1 of
// a two-worker mesh (its address printed, worker 0's read from stdin) that
// runs OP on BYTES until the mesh breaks. It returns when stdin closes or
// the mesh is lost.
func runPeer(role string) int {
	f := strings.Fields(role)
	switch f[0] {
	case "echo":
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 1
		}
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 1
		}
		srv := grpc.NewServer()
		srv.RegisterService(&echoDesc, nil)
		go func() { _ = srv.Serve(gl) }()
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
		fmt.Println(tl.Addr(), gl.Addr())
		_, _ = io.Copy(io.Discard, os.Stdin)
		srv.Stop()
		tl.Close()
		return 0
	case "mesh":
		n, _ := strconv.Atoi(f[2])
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 1
		}
		fmt.Println(lis.Addr())
		in := bufio.NewReader(os.Stdin)
		other, err := in.ReadString('\n')
		if err != nil {
			return 1
		}
		c := testConfig()
		c.Self, c.Addrs, c.Epoch, c.Listener = 1, []string{strings.TrimSpace(other), lis.Addr().String()}, 7, lis
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := NewMesh(ctx, c)
		cancel()
		if err != nil {
			return 1
		}
		defer m.Close()
		op := meshOp(f[1], n/4)
		for i := uint64(0); ; i++ {
			if err := op(m, i); err != nil {
				return 0
			}
		}
	}
	return 2
}

// meshOp returns one collective on floats float32s per member, tagged
// with step i, as both members of a two-worker mesh run it.
func meshOp(name string, floats int) func(m *Mesh, i uint64) error {
	group := []int{0, 1}
	data := make([]float32, floats)
	out := make([]float32, 2*floats)
	send := map[int]Payload{}
	for p := range 2 {
		cols := 1024
		send[p] = Payload{Rows: floats / cols, Cols: cols, Data: make([]float32, floats/cols*cols), Aux: make([]int32, floats/cols)}
	}
	ctx := context.Background()
	switch name {
	case "allreduce":
		return func(m *Mesh, i uint64) error {
			return m.AllReduceSum(ctx, Tag{Step: i, Phase: attn}, group, data)
		}
	case "allgather":
		return func(m *Mesh, i uint64) error {
			return m.AllGather(ctx, Tag{Step: i, Phase: moemeshv1.Phase_PHASE_ALLGATHER}, group, data, out)
		}
	case "alltoall":
		return func(m *Mesh, i uint64) error {
			_, err := m.AllToAll(ctx, Tag{Step: i, Phase: moemeshv1.Phase_PHASE_DISPATCH}, group, send)
			return err
		}
	}
	panic("unknown op " + name)
}

// peer is a running far end.
type peer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startPeer(b *testing.B, role string) *peer {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	args := []string{exe, "-test.run=^$"}
	if os.Getenv("MOEMESH_BENCH_PIN") == "1" {
		args = append([]string{"taskset", "-c", "1"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), peerEnv+"="+role)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &peer{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return p
}

func (p *peer) line(b *testing.B) []string {
	b.Helper()
	s, err := p.out.ReadString('\n')
	if err != nil {
		b.Fatalf("peer: %v", err)
	}
	return strings.Fields(s)
}

// BenchmarkFloor: round trips of one message of each size to another
// process: raw TCP, gRPC unary, gRPC bidi stream.
func BenchmarkFloor(b *testing.B) {
	p := startPeer(b, "echo")
	addrs := p.line(b)
	for _, size := range floorSizes {
		b.Run("tcp/"+sizeName(size), func(b *testing.B) {
			c, err := net.Dial("tcp", addrs[0])
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, size)
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		conn, err := grpc.NewClient(addrs[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		frame := &moemeshv1.Frame{Step: 1, Phase: attn, Payload: &moemeshv1.Tensor{Dtype: F32, Shape: []int64{int64(size / 4)}, Data: make([]byte, size)}}
		b.Run("grpc-unary/"+sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				var got moemeshv1.Frame
				if err := conn.Invoke(context.Background(), "/moemesh.bench.Echo/Unary", frame, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("grpc-bidi/"+sizeName(size), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := conn.NewStream(ctx, &echoDesc.Streams[0], "/moemesh.bench.Echo/Bidi")
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if err := st.SendMsg(frame); err != nil {
					b.Fatal(err)
				}
				var got moemeshv1.Frame
				if err := st.RecvMsg(&got); err != nil {
					b.Fatal(err)
				}
			}
			_ = st.CloseSend()
		})
		conn.Close()
	}
}

// BenchmarkCollective2P: each collective between two processes, at each
// size (bytes per member), as worker 0 of a two-worker mesh.
func BenchmarkCollective2P(b *testing.B) {
	for _, op := range []string{"allreduce", "allgather", "alltoall"} {
		for _, size := range floorSizes {
			b.Run(op+"/"+sizeName(size), func(b *testing.B) {
				p := startPeer(b, fmt.Sprintf("mesh %s %d", op, size))
				far := p.line(b)[0]
				lis := listen(b)
				if _, err := fmt.Fprintln(p.stdin, lis.Addr()); err != nil {
					b.Fatal(err)
				}
				c := testConfig()
				c.Self, c.Addrs, c.Epoch, c.Listener = 0, []string{lis.Addr().String(), far}, 7, lis
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				m, err := NewMesh(ctx, c)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				run := meshOp(op, size/4)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := uint64(0)
				for b.Loop() {
					if err := run(m, i); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
