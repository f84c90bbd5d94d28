package worker

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/worker/collective"
)

// Server is a worker process's gRPC server: the WorkerService and the
// PeerService of its mesh on one listener.
type Server struct {
	Worker *Worker
	grpc   *grpc.Server
	lis    net.Listener
	done   chan struct{}
}

// MaxMessageBytes bounds gRPC messages (logits of long prompts are large).
const MaxMessageBytes = 1 << 30

// Serve starts a worker server on lis. cfg.Mesh, when nil, joins a
// collective.Mesh registered on the same server.
func Serve(lis net.Listener, cfg Config) *Server {
	s := &Server{lis: lis, done: make(chan struct{})}
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes)}, cfg.ServerOptions...)...)
	svc := collective.NewService()
	svc.Register(s.grpc)
	if cfg.Mesh == nil {
		cfg.Mesh = func(ctx context.Context, self int, addrs []string, wire pb.DType, epoch uint64) (Exchange, func() error, error) {
			mc := collective.DefaultMeshConfig()
			mc.Self, mc.Addrs, mc.Epoch, mc.Service, mc.WireDType, mc.Logger = self, addrs, epoch, svc, wire, cfg.Log
			mc.DialOptions = cfg.PeerDialOptions
			if f := cfg.OnPeerLost; f != nil {
				mc.OnPeerLost = func(peer int, err error) { f(epoch, peer, err) }
			}
			if wire == pb.DType_DTYPE_UNSPECIFIED {
				mc.WireDType = collective.F32
			}
			m, err := collective.NewMesh(ctx, mc)
			if err != nil {
				return nil, nil, err
			}
			return m, m.Close, nil
		}
	}
	s.Worker = New(cfg)
	pb.RegisterWorkerServiceServer(s.grpc, s.Worker)
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(lis)
	}()
	// After the Shutdown RPC the server stops by itself.
	go func() {
		select {
		case <-s.Worker.Done():
			s.stopGRPC(shutdownGrace)
		case <-s.done:
		}
	}()
	return s
}

// shutdownGrace bounds how long a server stopping after Shutdown waits for
// RPCs in flight (the Shutdown answer among them).
const shutdownGrace = 5 * time.Second

func (s *Server) stopGRPC(grace time.Duration) {
	t := time.AfterFunc(grace, s.grpc.Stop)
	s.grpc.GracefulStop()
	t.Stop()
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Done is closed when the server has stopped serving: after Stop, Kill,
// or the WorkerService Shutdown RPC.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop closes the worker's mesh and model and stops the server, waiting at
// most grace for RPCs in flight.
func (s *Server) Stop(grace time.Duration) {
	_ = s.Worker.Close()
	s.stopGRPC(grace)
	<-s.done
}

// Kill stops the server at once, as a crash would look to its peers: every
// connection and stream is cut, RPCs in flight are cancelled, then the
// worker releases its model and mesh.
func (s *Server) Kill() {
	s.grpc.Stop()
	<-s.done
	_ = s.Worker.Close()
}
