package serving

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// Listeners are the front doors' sockets, opened before the coordinator
// starts so it can advertise their addresses.
type Listeners struct {
	GRPC, HTTP net.Listener
}

// Listen opens both listeners.
func Listen(grpcAddr, httpAddr string) (*Listeners, error) {
	g, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("serving: gRPC address %s: %w", grpcAddr, err)
	}
	h, err := net.Listen("tcp", httpAddr)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("serving: HTTP address %s: %w", httpAddr, err)
	}
	return &Listeners{GRPC: g, HTTP: h}, nil
}

// Close closes both listeners (when Serve was never called).
func (l *Listeners) Close() { l.GRPC.Close(); l.HTTP.Close() }

// Coordinator is what the front doors serve.
type Coordinator interface {
	Backend
	HealthSource
}

// Servers are the running front doors.
type Servers struct {
	grpc   *grpc.Server
	http   *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// Serve starts the gRPC server (inference, health, reflection) and the
// HTTP server (/health) on l.
func Serve(l *Listeners, c Coordinator) *Servers {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Servers{grpc: grpc.NewServer(), cancel: cancel, done: make(chan struct{})}
	infpb.RegisterInferenceServiceServer(s.grpc, NewInference(c))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, hs)
	reflection.Register(s.grpc)
	mux := http.NewServeMux()
	mux.Handle("/health", HealthHandler(c))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		errc := make(chan error, 2)
		go func() { errc <- s.grpc.Serve(l.GRPC) }()
		go func() { errc <- s.http.Serve(l.HTTP) }()
		go SyncGRPCHealth(ctx, hs, c, 100*time.Millisecond)
		<-errc
		<-errc
	}()
	return s
}

// Close stops both servers, giving streams in flight up to grace.
func (s *Servers) Close(grace time.Duration) error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.http.Shutdown(ctx)
	t := time.AfterFunc(grace, s.grpc.Stop)
	s.grpc.GracefulStop()
	t.Stop()
	<-s.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
