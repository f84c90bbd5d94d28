package clustertest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	. "github.com/moemesh/moemesh/coordinator/clustertest"
	"github.com/moemesh/moemesh/internal/pki"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// callWorker calls a worker's WorkerService (Health) and PeerService
// (Exchange without metadata, which a caller the policy admits gets
// INVALID_ARGUMENT for, changing nothing) with opt, returning the codes.
func callWorker(t *testing.T, addr string, opt grpc.DialOption) (health, exchange codes.Code) {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pb.NewWorkerServiceClient(conn).Health(ctx, &pb.HealthRequest{})
	health = status.Code(err)
	st, err := pb.NewPeerServiceClient(conn).Exchange(ctx)
	if err == nil {
		_, err = st.Recv()
	}
	return health, status.Code(err)
}

// foreignCA dials trusting the cluster's CA (so the server is accepted)
// while presenting a coordinator certificate of another CA: only the
// worker's check of the client can refuse it.
func foreignCA(t *testing.T, c Cluster) grpc.DialOption {
	t.Helper()
	other, err := pki.NewLocal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(other.Coordinator.Cert, other.Coordinator.Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.PKI().CA.Cert)
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert},
	}))
}

// TestInternalServicesRefuseStrangers: a real worker process refuses a
// plaintext caller, a certificate of another CA, and certificates whose
// role may not call the service (client and worker on WorkerService,
// client and coordinator on PeerService), admits the right roles, and the
// cluster keeps generating the same tokens.
func TestInternalServicesRefuseStrangers(t *testing.T) {
	r := Processes(binary)
	c := r.Start(t, Config{Model: modelDir, Workers: 2, Etcd: etcdKind(t, r), Context: 256})
	lead := Leader(t, c, 60*time.Second)
	want := generate(t, lead.Addr(), request(false), nil)
	lp := c.PKI()
	for _, tc := range []struct {
		name             string
		opt              grpc.DialOption
		health, exchange codes.Code
	}{
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable, codes.Unavailable},
		{"certificate of another CA", foreignCA(t, c), codes.Unavailable, codes.Unavailable},
		{"client role", Source(t, lp.Client).DialOption(pki.RoleWorker), codes.PermissionDenied, codes.PermissionDenied},
		{"coordinator role", Source(t, lp.Coordinator).DialOption(pki.RoleWorker), codes.OK, codes.PermissionDenied},
		{"worker role", Source(t, lp.Workers[1]).DialOption(pki.RoleWorker), codes.PermissionDenied, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range c.Workers() {
				health, exchange := callWorker(t, w.Addr(), tc.opt)
				if health != tc.health || exchange != tc.exchange {
					t.Errorf("%s: WorkerService.Health %v, PeerService.Exchange %v; want %v, %v", w.ID(), health, exchange, tc.health, tc.exchange)
				}
			}
		})
	}
	if diff := cmpTokens(want, generate(t, lead.Addr(), request(false), nil)); diff != "" {
		t.Errorf("after the refused callers (-want +got):\n%s", diff)
	}
}

// TestCertificateRotation re-issues a worker's certificate into its
// directory while it serves: new connections get the new certificate from
// the same process, and the cluster keeps serving.
func TestCertificateRotation(t *testing.T) {
	r := Processes(binary)
	c := r.Start(t, Config{Model: modelDir, Workers: 2, Etcd: etcdKind(t, r), Context: 256})
	lead := Leader(t, c, 60*time.Second)
	want := generate(t, lead.Addr(), request(false), nil)
	w := c.Workers()[0]
	served := func() *x509.Certificate {
		t.Helper()
		var p peer.Peer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A fresh connection each time: established ones keep their
		// handshake's certificate.
		if _, err := pb.NewWorkerServiceClient(WorkerConn(t, c, w.Addr())).Health(ctx, &pb.HealthRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0]
	}
	before := served()
	if !before.Equal(Source(t, c.PKI().Workers[0]).Certificate().Leaf) {
		t.Fatalf("worker 0 serves %v, not its issued certificate", before.SerialNumber)
	}
	is, err := c.PKI().CA.Issue(pki.IssueRequest{Role: pki.RoleWorker, Name: "worker-0-rotated",
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.WriteFiles(filepath.Dir(c.PKI().Workers[0].Cert), c.PKI().CA.CertPEM, true); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, func() error {
		if got := served(); !got.Equal(is.Cert) {
			return fmt.Errorf("worker 0 still serves serial %v, want the rotated %v", got.SerialNumber, is.Cert.SerialNumber)
		}
		return nil
	})
	if diff := cmpTokens(want, generate(t, lead.Addr(), request(false), nil)); diff != "" {
		t.Errorf("after the rotation (-want +got):\n%s", diff)
	}
}

// TestModelRootsRefuseOutside: a real worker whose --model-root is the
// directory above the model refuses, with PERMISSION_DENIED and no path in
// the message, a model_dir outside it, one reaching out with "..", and a
// symlink inside the root that leads out; the cluster keeps serving.
func TestModelRootsRefuseOutside(t *testing.T) {
	root := filepath.Dir(modelDir)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "escape")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })

	r := Processes(binary)
	c := r.Start(t, Config{Model: modelDir, ModelRoot: root, Workers: 2, Etcd: etcdKind(t, r), Context: 256})
	lead := Leader(t, c, 60*time.Second)
	want := generate(t, lead.Addr(), request(false), nil)
	wc := pb.NewWorkerServiceClient(WorkerConn(t, c, c.Workers()[0].Addr()))
	for _, dir := range []string{outside, filepath.Join(root, "..", filepath.Base(outside)), filepath.Join(modelDir, "..", ".."), link, "/etc"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := wc.LoadShard(ctx, &pb.LoadShardRequest{ModelDir: dir, Layout: &pb.Layout{Workers: 1, Tp: 1},
			PeerAddrs: []string{c.Workers()[0].Addr()}, KvBlocks: 1, KvBlockSize: 16, MeshEpoch: 1 << 40})
		cancel()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("LoadShard %s: %v, want PERMISSION_DENIED", dir, err)
			continue
		}
		if msg := status.Convert(err).Message(); containsAny(msg, dir, outside, root) {
			t.Errorf("LoadShard %s: the refusal %q names a path", dir, msg)
		}
	}
	if diff := cmpTokens(want, generate(t, lead.Addr(), request(false), nil)); diff != "" {
		t.Errorf("after the refused loads (-want +got):\n%s", diff)
	}
}

// cmpTokens diffs two generations' tokens.
func cmpTokens(want, got *Output) string { return cmp.Diff(want.Tokens, got.Tokens) }

// containsAny reports whether s contains one of subs.
func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
