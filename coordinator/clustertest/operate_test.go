package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	. "github.com/moemesh/moemesh/coordinator/clustertest"
	"github.com/moemesh/moemesh/coordinator/store"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// background runs req on addr in the background; the result arrives on
// the returned channel, and started is closed once n tokens arrived.
func background(addr string, n int, onToken func(int)) (started chan struct{}, done chan result) {
	started, done = make(chan struct{}), make(chan result, 1)
	var once atomic.Bool
	go func() {
		out, err := Generate(context.Background(), addr, request(false), func(got int) {
			if got >= n && once.CompareAndSwap(false, true) {
				close(started)
			}
			if onToken != nil {
				onToken(got)
			}
		})
		if once.CompareAndSwap(false, true) {
			close(started)
		}
		done <- result{out, err}
	}()
	return started, done
}

type result struct {
	out *Output
	err error
}

// waitStats waits until the leader's statistics counted tokens.
func waitStats(t *testing.T, ctx context.Context, ad adminpb.AdminServiceClient) *adminpb.GetExpertStatsResponse {
	t.Helper()
	var st *adminpb.GetExpertStatsResponse
	Eventually(t, 30*time.Second, func() error {
		var err error
		st, err = ad.GetExpertStats(ctx, &adminpb.GetExpertStatsRequest{})
		if err != nil {
			return err
		}
		if st.WindowTokens == 0 {
			return fmt.Errorf("no routed token in the statistics yet (%d workers reporting)", st.WorkersReporting)
		}
		return nil
	})
	return st
}

// consistent checks that the cluster serves one epoch: placement/current
// is served by every member at that epoch, and nothing is being prepared.
func consistent(t *testing.T, c Cluster, ad adminpb.AdminServiceClient, ctx context.Context) *adminpb.GetStatusResponse {
	t.Helper()
	var st *adminpb.GetStatusResponse
	Eventually(t, 60*time.Second, func() error {
		var err error
		if st, err = ad.GetStatus(ctx, &adminpb.GetStatusRequest{}); err != nil {
			return err
		}
		cur, err := c.Store().CurrentPlacement(ctx)
		if err != nil {
			return err
		}
		if cur.Epoch != st.Epoch || !st.Ready {
			return fmt.Errorf("etcd's current epoch %d, the leader serves %d (ready %v: %s)", cur.Epoch, st.Epoch, st.Ready, st.Reason)
		}
		if _, err := c.Store().NextPlacement(ctx); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("placement/next still set (%v)", err)
		}
		for _, w := range st.Workers {
			if w.Index >= 0 && (w.State != adminpb.WorkerState_WORKER_STATE_SERVING || w.PlacementEpoch != st.Epoch) {
				return fmt.Errorf("worker %s is %v at epoch %d, the placement is epoch %d", w.Id, w.State, w.PlacementEpoch, st.Epoch)
			}
		}
		return nil
	})
	return st
}

// TestLiveRebalance applies a rebalance while a generation streams: the
// stream finishes with the tokens of an undisturbed run, the epoch moves
// on, the predicted imbalance does not grow, and the placement served is
// the plan's.
func TestLiveRebalance(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 4, SpareSlots: 2})
	lead := Leader(t, c, 60*time.Second)
	ad, ctx := Admin(t, lead), AdminCtx(context.Background(), c)
	want := generate(t, lead.Addr(), request(false), nil)
	before := waitStats(t, ctx, ad)
	if before.Imbalance < 1 {
		t.Errorf("measured imbalance %v below 1", before.Imbalance)
	}
	pr, err := ad.PlanRebalance(ctx, &adminpb.PlanRebalanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	plan := pr.Plan
	if len(plan.Moves) == 0 || plan.ImbalanceAfter > plan.ImbalanceBefore {
		t.Fatalf("plan: %d moves, imbalance %.3f → %.3f; want moves that do not raise it", len(plan.Moves), plan.ImbalanceBefore, plan.ImbalanceAfter)
	}
	t.Logf("plan: %d moves, %d bytes, predicted imbalance %.3f → %.3f (measured %.3f over %d tokens)",
		len(plan.Moves), plan.Bytes, plan.ImbalanceBefore, plan.ImbalanceAfter, before.Imbalance, before.WindowTokens)

	started, done := background(lead.Addr(), 8, nil)
	<-started
	s, err := ad.ApplyRebalance(ctx, &adminpb.ApplyRebalanceRequest{Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := Follow(s)
	if err != nil {
		t.Fatalf("apply: %v (progress %v)", err, msgs)
	}
	var phases []adminpb.Phase
	for _, m := range msgs {
		if len(phases) == 0 || phases[len(phases)-1] != m.Phase {
			phases = append(phases, m.Phase)
		}
	}
	wantPhases := []adminpb.Phase{adminpb.Phase_PHASE_PREPARING, adminpb.Phase_PHASE_SWITCHING, adminpb.Phase_PHASE_COMMITTING, adminpb.Phase_PHASE_DONE}
	if diff := cmp.Diff(wantPhases, phases); diff != "" {
		t.Errorf("apply phases (-want +got):\n%s", diff)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("generation during the apply: %v", r.err)
	}
	if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output during a rebalance (-want +got):\n%s", diff)
	}
	st := consistent(t, c, ad, ctx)
	if lo := st.LastOperation; lo.GetPhase() != adminpb.Phase_PHASE_DONE || lo.GetKind() != "rebalance" || lo.GetToEpoch() != st.Epoch {
		t.Errorf("status last_operation = %v, want the rebalance DONE at epoch %d", lo, st.Epoch)
	}
	if st.Epoch != plan.FromEpoch+1 {
		t.Errorf("serving epoch %d after applying a plan from %d", st.Epoch, plan.FromEpoch)
	}
	// The served placement is the plan's: every move's target hosts the
	// expert, every source that only lost it does not.
	pl, err := ad.GetPlacement(ctx, &adminpb.GetPlacementRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[[2]string]bool{}
	for _, l := range pl.Layers {
		for w, we := range l.Workers {
			for _, e := range we.Experts {
				hosts[[2]string{fmt.Sprint(l.Layer, "/", e), pl.WorkerIds[w]}] = true
			}
		}
	}
	for _, m := range plan.Moves {
		k := fmt.Sprint(m.Layer, "/", m.Expert)
		if m.ToWorker != "" && !hosts[[2]string{k, m.ToWorker}] {
			t.Errorf("move %v: %s does not host the expert", m, m.ToWorker)
		}
		if m.FromWorker != "" && hosts[[2]string{k, m.FromWorker}] {
			t.Errorf("move %v: %s still hosts the expert", m, m.FromWorker)
		}
	}
	// A stale plan is refused.
	s, err = ad.ApplyRebalance(ctx, &adminpb.ApplyRebalanceRequest{Plan: plan})
	if err == nil {
		_, err = Follow(s)
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("re-applying a stale plan: %v, want FAILED_PRECONDITION", err)
	}
	if diff := cmp.Diff(want.Tokens, generate(t, lead.Addr(), request(false), nil).Tokens); diff != "" {
		t.Errorf("greedy output after the rebalance (-want +got):\n%s", diff)
	}
}

// TestAdminAuth: cluster changes need the admin token.
func TestAdminAuth(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 1})
	lead := Leader(t, c, 60*time.Second)
	ad := Admin(t, lead)
	if _, err := ad.Uncordon(context.Background(), &adminpb.UncordonRequest{WorkerId: "w0"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("uncordon without a token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := ad.GetStatus(context.Background(), &adminpb.GetStatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("status without a token on a cluster with an admin token: %v, want UNAUTHENTICATED", err)
	}
	st, err := ad.GetStatus(AdminCtx(context.Background(), c), &adminpb.GetStatusRequest{})
	if err != nil || st.Leader != lead.ID() || len(st.Workers) != 1 {
		t.Errorf("status = %v, %v; want leader %s and one worker", st, err, lead.ID())
	}
	if _, err := ad.Uncordon(AdminCtx(context.Background(), c), &adminpb.UncordonRequest{WorkerId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("uncordon of an unknown worker: %v, want NOT_FOUND", err)
	}
}

// TestDrainAndUncordon drains a member while a generation streams: a spare
// takes its place, the stream finishes with the undisturbed tokens, the
// drained worker is cordoned and serves nothing, stopping it fails no
// request, and uncordon returns it to the pool.
func TestDrainAndUncordon(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 2, Spares: 1})
	lead := Leader(t, c, 60*time.Second)
	ad, ctx := Admin(t, lead), AdminCtx(context.Background(), c)
	want := generate(t, lead.Addr(), request(false), nil)

	started, done := background(lead.Addr(), 8, nil)
	<-started
	s, err := ad.Drain(ctx, &adminpb.DrainRequest{WorkerId: "w0"})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := Follow(s); err != nil {
		t.Fatalf("drain: %v (progress %v)", err, msgs)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("generation during the drain: %v", r.err)
	}
	if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output during a drain (-want +got):\n%s", diff)
	}
	st := consistent(t, c, ad, ctx)
	state := map[string]adminpb.WorkerState{}
	var members []string
	for _, w := range st.Workers {
		state[w.Id] = w.State
		if w.Index >= 0 {
			members = append(members, w.Id)
		}
	}
	slices.Sort(members)
	if diff := cmp.Diff([]string{"w1", "w2"}, members); diff != "" {
		t.Errorf("members after draining w0 (-want +got):\n%s", diff)
	}
	if state["w0"] != adminpb.WorkerState_WORKER_STATE_CORDONED {
		t.Errorf("w0 is %v after the drain, want CORDONED", state["w0"])
	}

	// Uncordoned, w0 is a spare again.
	u, err := ad.Uncordon(ctx, &adminpb.UncordonRequest{WorkerId: "w0"})
	if err != nil || !u.WasCordoned {
		t.Fatalf("uncordon: %v, %v", u, err)
	}
	Eventually(t, 10*time.Second, func() error {
		st, err := ad.GetStatus(ctx, &adminpb.GetStatusRequest{})
		if err != nil {
			return err
		}
		for _, w := range st.Workers {
			if w.Id == "w0" && w.State == adminpb.WorkerState_WORKER_STATE_SPARE {
				return nil
			}
		}
		return fmt.Errorf("w0 is not a spare: %v", st.Workers)
	})
	// Stopping a worker that serves nothing fails nothing.
	started, done = background(lead.Addr(), 8, nil)
	<-started
	c.Workers()[0].Kill(t)
	if r := <-done; r.err != nil {
		t.Fatalf("generation while the drained worker stops: %v", r.err)
	} else if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output while the drained worker stops (-want +got):\n%s", diff)
	}
}

// TestWorkerDiesDuringApply SIGKILLs a worker as soon as a rebalance
// starts preparing: the apply aborts (or, when the load had already
// finished, commits and the failure path takes over); either way the
// cluster ends on one consistent epoch and keeps serving, and a stream in
// flight finishes with the undisturbed tokens.
func TestWorkerDiesDuringApply(t *testing.T) {
	r := Processes(binary)
	c := r.Start(t, Config{Model: modelDir, Workers: 4, Spares: 1, SpareSlots: 2, Etcd: etcdKind(t, r)})
	lead := Leader(t, c, 60*time.Second)
	ad, ctx := Admin(t, lead), AdminCtx(context.Background(), c)
	want := generate(t, lead.Addr(), request(false), nil)
	waitStats(t, ctx, ad)
	pr, err := ad.PlanRebalance(ctx, &adminpb.PlanRebalanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	started, done := background(lead.Addr(), 8, nil)
	<-started
	s, err := ad.ApplyRebalance(ctx, &adminpb.ApplyRebalanceRequest{Plan: pr.Plan})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.Phase != adminpb.Phase_PHASE_PREPARING {
		t.Fatalf("first progress %v, want PREPARING", first)
	}
	c.Workers()[1].Kill(t)
	msgs, err := Follow(s)
	switch status.Code(err) {
	case codes.Aborted:
		t.Logf("the apply aborted: %v", err)
	case codes.OK:
		t.Logf("the apply committed before the death was seen (%d more messages)", len(msgs))
	default:
		t.Fatalf("apply: %v, want ABORTED or success", err)
	}
	if r := <-done; r.err != nil {
		t.Fatalf("generation during the failed apply: %v", r.err)
	} else if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output across the failed apply (-want +got):\n%s", diff)
	}
	st := consistent(t, c, ad, ctx)
	for _, w := range st.Workers {
		if w.Id == c.Workers()[1].ID() && w.Index >= 0 {
			t.Errorf("the dead worker is still a member of epoch %d", st.Epoch)
		}
	}
	if diff := cmp.Diff(want.Tokens, generate(t, lead.Addr(), request(false), nil).Tokens); diff != "" {
		t.Errorf("greedy output after (-want +got):\n%s", diff)
	}
}

// TestDrainWithoutSpare: with no spare the drain shrinks the layout onto
// the other worker (a new mesh: the stream in flight is re-prefilled and
// still finishes with the undisturbed tokens); uncordon brings the worker
// back into the next placement at the configured size.
func TestDrainWithoutSpare(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 2})
	lead := Leader(t, c, 60*time.Second)
	ad, ctx := Admin(t, lead), AdminCtx(context.Background(), c)
	want := generate(t, lead.Addr(), request(false), nil)
	members := func() []string {
		st := consistent(t, c, ad, ctx)
		var out []string
		for _, w := range st.Workers {
			if w.Index >= 0 {
				out = append(out, w.Id)
			}
		}
		slices.Sort(out)
		return out
	}

	started, done := background(lead.Addr(), 8, nil)
	<-started
	s, err := ad.Drain(ctx, &adminpb.DrainRequest{WorkerId: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := Follow(s); err != nil {
		t.Fatalf("drain: %v (progress %v)", err, msgs)
	}
	if r := <-done; r.err != nil {
		t.Fatalf("generation during the drain: %v", r.err)
	} else if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output across a drain onto a smaller layout (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"w0"}, members()); diff != "" {
		t.Errorf("members after the drain (-want +got):\n%s", diff)
	}

	started, done = background(lead.Addr(), 8, nil)
	<-started
	if u, err := ad.Uncordon(ctx, &adminpb.UncordonRequest{WorkerId: "w1"}); err != nil || !u.WasCordoned {
		t.Fatalf("uncordon: %v, %v", u, err)
	}
	if r := <-done; r.err != nil {
		t.Fatalf("generation during the uncordon: %v", r.err)
	} else if diff := cmp.Diff(want.Tokens, r.out.Tokens); diff != "" {
		t.Errorf("greedy output across the uncordon (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"w0", "w1"}, members()); diff != "" {
		t.Errorf("members after the uncordon (-want +got):\n%s", diff)
	}
}
