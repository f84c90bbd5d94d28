package pki

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Full method prefixes of the internal services.
const (
	WorkerServicePrefix = "/moemesh.v1.WorkerService/"
	PeerServicePrefix   = "/moemesh.v1.PeerService/"
)

// Policy maps a full gRPC method name prefix ("/pkg.Service/" or
// "/pkg.Service/Method") to the roles allowed to call it. The longest
// matching prefix decides; a method no prefix matches is refused.
type Policy map[string][]Role

// WorkerPolicy is the policy of a worker's gRPC server: the coordinator
// drives WorkerService, workers open PeerService streams; a client
// certificate is refused from both.
func WorkerPolicy() Policy {
	return Policy{
		WorkerServicePrefix: {RoleCoordinator},
		PeerServicePrefix:   {RoleWorker},
	}
}

// allowed returns the roles for method, or nil when no prefix matches.
func (p Policy) allowed(method string) []Role {
	best := -1
	var roles []Role
	for prefix, rs := range p {
		if len(prefix) > best && strings.HasPrefix(method, prefix) {
			best, roles = len(prefix), rs
		}
	}
	return roles
}

// PeerRole returns the role of the caller of a gRPC handler, from its
// verified TLS chain. A plaintext caller or one without a verified chain
// is UNAUTHENTICATED.
func PeerRole(ctx context.Context) (Role, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "pki: no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "pki: the connection is not TLS")
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "pki: no verified client certificate")
	}
	return roleOrStatus(chains[0][0])
}

func roleOrStatus(c *x509.Certificate) (Role, error) {
	r, err := RoleOf(c)
	if err != nil {
		return "", status.Error(codes.PermissionDenied, err.Error())
	}
	return r, nil
}

// Authorize checks that the caller in ctx may call method under p:
// UNAUTHENTICATED without a verified certificate, PERMISSION_DENIED for a
// role the policy does not list (or a method it does not list).
func (p Policy) Authorize(ctx context.Context, method string) error {
	r, err := PeerRole(ctx)
	if err != nil {
		return err
	}
	allowed := p.allowed(method)
	if allowed == nil {
		return status.Errorf(codes.PermissionDenied, "pki: %s is not open to any role", method)
	}
	if !slices.Contains(allowed, r) {
		return status.Errorf(codes.PermissionDenied, "pki: role %q may not call %s", r, method)
	}
	return nil
}

// UnaryInterceptor enforces p on unary calls.
func (p Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := p.Authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor enforces p on streams.
func (p Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := p.Authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// ServerOptions returns the options of a gRPC server speaking mutual TLS
// with s's material and enforcing p on every call (chained before any
// interceptor the caller adds).
func (s *Source) ServerOptions(p Policy) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(s.ServerTLS())),
		grpc.ChainUnaryInterceptor(p.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(p.StreamInterceptor()),
	}
}

// DialOption returns the transport credentials for dialling a server
// whose certificate must carry one of roles (none: any role), presenting
// s's certificate. The name checked against the server's SANs is the
// dialled host.
func (s *Source) DialOption(roles ...Role) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(s.ClientTLS("", roles...)))
}
