package serving

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/scheduler"
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

// Deps are what the front doors serve.
type Deps struct {
	// Submitter runs generations (the scheduler's Service).
	Submitter scheduler.Submitter
	// Model says which checkpoint is served and its context.
	Model ModelSource
	// Health reports readiness for /health and the gRPC health service.
	Health HealthSource
	// Metrics, when set, are the metrics the scheduler also reports to
	// (NewMetrics); nil makes them on Config.Registry.
	Metrics *Metrics
	// Admin, when set, is served as the admin API (AdminService).
	Admin Admin
}

// Server is the front doors of one coordinator: the gRPC inference,
// health and reflection services and the HTTP API (OpenAI-compatible,
// /health, /metrics).
type Server struct {
	cfg     Config
	sub     scheduler.Submitter
	models  *models
	health  HealthSource
	metrics *Metrics
	auth    *auth
	cert    *tls.Certificate
	log     *slog.Logger

	grpc   *grpc.Server
	hs     *health.Server
	http   *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// New builds the front doors; Serve starts them.
func New(cfg Config, d Deps) (*Server, error) {
	if d.Submitter == nil || d.Model == nil || d.Health == nil {
		return nil, errors.New("serving: Deps needs a Submitter, a Model and a Health source")
	}
	keys, cert, err := cfg.load()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, sub: d.Submitter, models: &models{src: d.Model, name: cfg.ModelName}, health: d.Health,
		metrics: d.Metrics, auth: newAuth(keys, cfg.MaxStreamsPerKey), cert: cert, log: cfg.Log, done: make(chan struct{})}
	if s.metrics == nil {
		s.metrics = NewMetrics(cfg.Registry)
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.models.onLoad = s.metrics.setModel
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.auth.unary),
		grpc.ChainStreamInterceptor(s.auth.stream),
		grpc.MaxRecvMsgSize(int(cfg.MaxBodyBytes)),
	}
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})))
	}
	s.grpc = grpc.NewServer(opts...)
	infpb.RegisterInferenceServiceServer(s.grpc, &inference{s: s})
	if d.Admin != nil {
		tok, err := cfg.adminToken()
		if err != nil {
			return nil, err
		}
		ad := &admin{a: d.Admin, keys: s.auth}
		if tok != "" {
			ad.token = newAuth([]string{tok}, 0)
		}
		adminpb.RegisterAdminServiceServer(s.grpc, ad)
		if err := s.metrics.reg.Register(newExpertCollector(d.Admin, s.models.servedName)); err != nil {
			return nil, fmt.Errorf("serving: expert metrics: %w", err)
		}
	}
	s.hs = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.hs)
	reflection.Register(s.grpc)
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if cert != nil {
		s.http.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

// Metrics are the server's metrics (hand them to the scheduler as its
// Observer when Deps.Metrics was nil).
func (s *Server) Metrics() *Metrics { return s.metrics }

// GRPC is the gRPC server, for tests that serve it on their own listener.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Serve serves l until Close.
func (s *Server) Serve(l *Listeners) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		errc := make(chan error, 2)
		go func() { errc <- s.grpc.Serve(l.GRPC) }()
		go func() {
			if s.cert != nil {
				errc <- s.http.ServeTLS(l.HTTP, "", "")
				return
			}
			errc <- s.http.Serve(l.HTTP)
		}()
		go SyncGRPCHealth(ctx, s.hs, s.health, 100*time.Millisecond)
		<-errc
		<-errc
	}()
}

// Close stops both servers, giving streams in flight up to grace.
func (s *Server) Close(grace time.Duration) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close() // streams still running after grace are cut
	}
	t := time.AfterFunc(grace, s.grpc.Stop)
	s.grpc.GracefulStop()
	t.Stop()
	<-s.done
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return err
}
