package worker

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/internal/pki"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// TestMutualTLSCluster runs two workers whose servers and peer links use
// mutual TLS with the cluster PKI: the mesh forms and a step matches the
// single-process logits; WorkerService admits the coordinator role and
// refuses a client certificate and plaintext.
func TestMutualTLSCluster(t *testing.T) {
	lp, err := pki.NewLocal(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	source := func(f pki.Files) *pki.Source {
		s, err := pki.NewSource(f)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	c := newTestCluster(t, tinyA, 2, func(i int) Config {
		s := source(lp.Workers[i])
		return Config{ServerOptions: s.ServerOptions(pki.WorkerPolicy()), PeerDialOptions: []grpc.DialOption{s.DialOption(pki.RoleWorker)}}
	})
	want := localLogits(t, tinyA)
	seqs := testSeqs(t, c.cfg.VocabSize)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.load(ctx, loadSpec{members: []int{0, 1}, place: placementProto(1, uniform(c.cfg, 2, 0)), meshEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := c.step(ctx, []int{0, 1}, logitsRequest(1, 1, seqs))
	if err != nil {
		t.Fatal(err)
	}
	checkLogits(t, got, seqs, want)

	for _, tc := range []struct {
		name string
		opt  grpc.DialOption
		want codes.Code
	}{
		{"coordinator", source(lp.Coordinator).DialOption(pki.RoleWorker), codes.OK},
		{"client role", source(lp.Client).DialOption(), codes.PermissionDenied},
		{"worker role", source(lp.Workers[1]).DialOption(), codes.PermissionDenied},
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(c.servers[0].Addr(), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = pb.NewWorkerServiceClient(conn).Health(ctx, &pb.HealthRequest{})
			if status.Code(err) != tc.want {
				t.Fatalf("Health: %v, want %v", err, tc.want)
			}
		})
	}
}
