package e2e_test

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/coordinator/clustertest"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// TestStreamSurvivesFailures streams through the SDK while a worker and
// then the leading coordinator are killed (SIGKILL) mid-generation: each
// stream equals the uninterrupted one, with sampling on.
func TestStreamSurvivesFailures(t *testing.T) {
	kinds := storetest.Kinds(t)
	c := clustertest.Processes(binary).Start(t, clustertest.Config{Model: modelDir, Workers: 2, Spares: 1, Coordinators: 2, Etcd: kinds[len(kinds)-1]})
	lead := clustertest.Leader(t, c, 90*time.Second)
	var addrs []string
	for _, m := range c.Coordinators() {
		addrs = append(addrs, m.Addr())
	}
	sdk := dial(t, addrs...)
	req := func() *pb.GenerateRequest {
		return &pb.GenerateRequest{Prompt: "Tell me about mixtures of experts.", ChatTemplate: true, MaxTokens: 64, IgnoreEos: true, Sampling: seeded(11)}
	}
	ctx := ctxFor(t, 4*time.Minute)
	stream := func(killAt int, kill func()) ([]int32, string, int) {
		t.Helper()
		st, err := sdk.Generate(ctx, req())
		if err != nil {
			t.Fatal(err)
		}
		var ids []int32
		var text string
		killed := false
		for {
			m, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("stream after %d tokens: %v", len(ids), err)
			}
			ids = append(ids, m.TokenIds...)
			text += m.Text
			if !killed && kill != nil && len(ids) >= killAt {
				killed = true
				kill()
			}
		}
		return ids, text, st.Attempts()
	}
	want, wantText, _ := stream(0, nil)
	if len(want) != 64 {
		t.Fatalf("uninterrupted: %d tokens, want 64", len(want))
	}

	ids, text, attempts := stream(8, func() { c.Workers()[0].Kill(t) })
	if diff := cmp.Diff(want, ids); diff != "" || text != wantText {
		t.Errorf("worker killed: tokens (-want +got):\n%s\ntext %q, want %q", diff, text, wantText)
	}
	t.Logf("worker killed: %d attempt(s)", attempts)

	ids, text, attempts = stream(8, func() { lead.Kill(t) })
	if diff := cmp.Diff(want, ids); diff != "" || text != wantText {
		t.Errorf("leader killed: tokens (-want +got):\n%s\ntext %q, want %q", diff, text, wantText)
	}
	if attempts < 2 {
		t.Errorf("leader killed mid-stream but the SDK made %d attempt(s)", attempts)
	}
	if next := clustertest.Leader(t, c, 30*time.Second); next.ID() == lead.ID() || !slices.Contains(addrs, next.Addr()) {
		t.Errorf("leader after the kill: %s", next.ID())
	}
}
