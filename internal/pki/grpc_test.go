package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// issueTo writes a certificate of role from ca into a new directory and
// returns its Source.
func issueTo(t *testing.T, ca *CA, role Role, name string) *Source {
	t.Helper()
	is, err := ca.Issue(IssueRequest{Role: role, Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := is.WriteFiles(dir, ca.CertPEM, false); err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(FilesIn(dir))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveWorkerServices runs a gRPC server with the unimplemented worker
// and peer services behind src's mTLS and WorkerPolicy. A call the policy
// admits answers UNIMPLEMENTED; one it refuses answers PERMISSION_DENIED.
func serveWorkerServices(t *testing.T, src *Source) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(src.ServerOptions(WorkerPolicy())...)
	moemeshv1.RegisterWorkerServiceServer(srv, moemeshv1.UnimplementedWorkerServiceServer{})
	moemeshv1.RegisterPeerServiceServer(srv, moemeshv1.UnimplementedPeerServiceServer{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// callBoth calls one unary WorkerService method and opens a PeerService
// stream, returning both codes.
func callBoth(t *testing.T, addr string, opt grpc.DialOption) (worker, peer codes.Code) {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = moemeshv1.NewWorkerServiceClient(conn).Health(ctx, &moemeshv1.HealthRequest{})
	worker = status.Code(err)
	st, err := moemeshv1.NewPeerServiceClient(conn).Exchange(ctx)
	if err == nil {
		_, err = st.Recv()
	}
	return worker, status.Code(err)
}

func TestWorkerPolicyOverMTLS(t *testing.T) {
	ca, foreign := mustCA(t), mustCA(t)
	server := issueTo(t, ca, RoleWorker, "server")
	addr := serveWorkerServices(t, server)
	tests := []struct {
		name             string
		opt              grpc.DialOption
		worker, peerCode codes.Code
	}{
		{"coordinator", issueTo(t, ca, RoleCoordinator, "coord").DialOption(RoleWorker), codes.Unimplemented, codes.PermissionDenied},
		{"worker", issueTo(t, ca, RoleWorker, "peer").DialOption(RoleWorker), codes.PermissionDenied, codes.Unimplemented},
		{"client role", issueTo(t, ca, RoleClient, "op").DialOption(), codes.PermissionDenied, codes.PermissionDenied},
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable, codes.Unavailable},
		{"certificate of another CA", issueTo(t, foreign, RoleCoordinator, "intruder").DialOption(), codes.Unavailable, codes.Unavailable},
		{"TLS without a client certificate", grpc.WithTransportCredentials(credentials.NewTLS(noCertClient(ca))), codes.Unavailable, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, p := callBoth(t, addr, tc.opt)
			if w != tc.worker || p != tc.peerCode {
				t.Fatalf("WorkerService %v, PeerService %v; want %v, %v", w, p, tc.worker, tc.peerCode)
			}
		})
	}
}

// TestClientChecksServerRole: a worker dialling a peer refuses a server
// whose certificate is not a worker's, and one whose SANs do not name the
// dialled address.
func TestClientChecksServerRole(t *testing.T) {
	ca := mustCA(t)
	addr := serveWorkerServices(t, issueTo(t, ca, RoleCoordinator, "not-a-worker"))
	w, _ := callBoth(t, addr, issueTo(t, ca, RoleWorker, "w").DialOption(RoleWorker))
	if w != codes.Unavailable {
		t.Fatalf("dialling a coordinator as a worker peer: %v, want Unavailable", w)
	}
	// The same server, dialled through a name its certificate lacks.
	src := issueTo(t, ca, RoleCoordinator, "c")
	opt := grpc.WithTransportCredentials(credentials.NewTLS(src.ClientTLS("other.example")))
	if w, _ := callBoth(t, addr, opt); w != codes.Unavailable {
		t.Fatalf("wrong server name: %v, want Unavailable", w)
	}
}

// noCertClient is a TLS client that trusts ca but has no certificate.
func noCertClient(ca *CA) *tls.Config {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return &tls.Config{RootCAs: p, ServerName: "127.0.0.1"}
}

// servedSerial dials addr with opt and returns the serial number of the
// certificate the server presented.
func servedSerial(t *testing.T, addr string, opt grpc.DialOption) string {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	_, err = moemeshv1.NewWorkerServiceClient(conn).Health(ctx, &moemeshv1.HealthRequest{}, grpc.Peer(&p))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Health: %v", err)
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber.String()
}

// TestRotation rewrites a server's certificate, then its CA, on disk:
// new connections see the new files without a restart; a bad file keeps
// the previous material and is reported by Err.
func TestRotation(t *testing.T) {
	ca := mustCA(t)
	server := issueTo(t, ca, RoleWorker, "server")
	addr := serveWorkerServices(t, server)
	client := issueTo(t, ca, RoleCoordinator, "coord")
	first := servedSerial(t, addr, client.DialOption())

	next, err := ca.Issue(IssueRequest{Role: RoleWorker, Name: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := server.Files()
	if err := next.WriteFiles(filepath.Dir(f.Cert), ca.CertPEM, true); err != nil {
		t.Fatal(err)
	}
	bump(t, f.CA, f.Cert, f.Key)
	second := servedSerial(t, addr, client.DialOption())
	if second == first || second != next.Cert.SerialNumber.String() {
		t.Fatalf("after rotation the server presents serial %s (first %s, new %s)", second, first, next.Cert.SerialNumber)
	}

	// A half-written key: the server keeps serving the current pair.
	if err := os.WriteFile(f.Key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, f.Key)
	if got := servedSerial(t, addr, client.DialOption()); got != second {
		t.Fatalf("with a broken key file the server presents %s, want the previous %s", got, second)
	}
	if server.Err() == nil {
		t.Fatal("Err() = nil after a failed reload")
	}

	// A new CA: the server trusts a bundle of both, then a client of the
	// new CA gets in.
	ca2 := mustCA(t)
	next2, err := ca2.Issue(IssueRequest{Role: RoleWorker, Name: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(append([]byte{}, ca2.CertPEM...), ca.CertPEM...)
	if err := next2.WriteFiles(filepath.Dir(f.Cert), bundle, true); err != nil {
		t.Fatal(err)
	}
	bump(t, f.CA, f.Cert, f.Key)
	client2 := issueTo(t, ca2, RoleCoordinator, "coord2")
	if got := servedSerial(t, addr, client2.DialOption()); got != next2.Cert.SerialNumber.String() {
		t.Fatalf("after the CA rotation the server presents %s, want %s", got, next2.Cert.SerialNumber)
	}
	if server.Err() != nil {
		t.Fatalf("Err() = %v after a good reload", server.Err())
	}
}

// bump moves the modification times forward, as a rotation seconds later
// would (some file systems keep coarse times).
func bump(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		mt := fi.ModTime().Add(2 * time.Second)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}
