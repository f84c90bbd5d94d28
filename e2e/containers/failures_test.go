//go:build containers

package containers_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator/clustertest"
	wpb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// TestWorkerKilled: `docker kill` of a worker of the layout mid-generation
// loses no request: the stream completes with the single-process output,
// and the spare takes the dead worker's place.
func TestWorkerKilled(t *testing.T) {
	c := startCluster(t)
	_, before := c.layout(t)
	victim := c.worker(t, before[0])
	var killed time.Time
	ids, attempts := c.chat(t, func() { killed = time.Now(); victim.kill(t) })
	c.checkOutput(t, "worker killed mid-generation", ids)
	t.Logf("worker %s killed at token %d: the stream finished %v later after %d attempt(s)", victim.host, killAt, time.Since(killed).Round(time.Millisecond), attempts)
	_, after := c.layout(t)
	if slices.Contains(after, victim.host) || len(after) != workers {
		t.Errorf("layout after %s died: %v; want %d workers without it", victim.host, after, workers)
	}
}

// TestWorkerPartitioned: `docker pause` freezes a worker of the layout as
// a network partition would. The cluster fences it (its registration is
// gone) and re-plans with the spare; after `docker unpause` the worker
// finds its lease revoked, drops its shards, registers again as a spare,
// and refuses steps of its old epoch.
func TestWorkerPartitioned(t *testing.T) {
	c := startCluster(t)
	want, _ := c.chat(t, nil)
	oldEpoch, before := c.layout(t)
	victim := c.worker(t, before[len(before)-1])
	victim.pause(t)
	pausedAt := time.Now()
	paused := true
	t.Cleanup(func() {
		if paused { // a frozen container cannot be removed
			victim.unpause(t)
		}
	})
	clustertest.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p, err := c.st.CurrentPlacement(ctx)
		if err != nil {
			return err
		}
		if p.Epoch == oldEpoch || slices.Contains(p.WorkerIds, victim.host) {
			return fmt.Errorf("placement epoch %d has %v; want a new epoch without %s", p.Epoch, p.WorkerIds, victim.host)
		}
		ids, err := c.registered(ctx)
		if err != nil {
			return err
		}
		if slices.Contains(ids, victim.host) {
			return fmt.Errorf("%s is still registered (not fenced)", victim.host)
		}
		return nil
	})
	t.Logf("%s paused: fenced and replaced in %v", victim.host, time.Since(pausedAt).Round(100*time.Millisecond))
	got, _ := c.chat(t, nil)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("without the frozen worker (-before +after):\n%s", diff)
	}

	victim.unpause(t)
	paused = false
	unpausedAt := time.Now()
	wc := wpb.NewWorkerServiceClient(c.workerConn(t, victim))
	clustertest.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h, err := wc.Health(ctx, &wpb.HealthRequest{})
		if err != nil {
			return err
		}
		if h.State != wpb.WorkerState_WORKER_STATE_EMPTY {
			return fmt.Errorf("the thawed worker is %v, want EMPTY (fenced)", h.State)
		}
		ids, err := c.registered(ctx)
		if err != nil {
			return err
		}
		if !slices.Contains(ids, victim.host) {
			return fmt.Errorf("%s not registered again (registered: %v)", victim.host, ids)
		}
		return nil
	})
	t.Logf("%s unpaused: empty and registered again in %v", victim.host, time.Since(unpausedAt).Round(100*time.Millisecond))
	if _, layout := c.layout(t); slices.Contains(layout, victim.host) {
		t.Errorf("the thawed worker %s is back in the layout %v; want it a spare", victim.host, layout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := wc.Step(ctx, &wpb.StepRequest{Step: 1 << 40, PlacementEpoch: oldEpoch,
		Seqs: []*wpb.SeqStep{{SeqId: 1, Tokens: []int32{1}, BlockTable: []int32{0}, Sample: true}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a step of the old epoch %d on the fenced worker: %v, want FAILED_PRECONDITION", oldEpoch, err)
	}
	got, _ = c.chat(t, nil)
	c.checkOutput(t, "after the partition healed", got)
}

// TestLeaderKilled: `docker kill` of the leading coordinator
// mid-generation: the standby takes over and the SDK, which knows both
// addresses, resumes the stream there with the single-process output.
func TestLeaderKilled(t *testing.T) {
	c := startCluster(t)
	lead := c.leader(t, time.Minute)
	var killed time.Time
	ids, attempts := c.chat(t, func() { killed = time.Now(); lead.kill(t) })
	c.checkOutput(t, "leader killed mid-generation", ids)
	if attempts < 2 {
		t.Errorf("the leader was killed mid-stream but the SDK made %d attempt(s)", attempts)
	}
	t.Logf("leader %s killed at token %d: the stream finished %v later after %d attempts", lead.host, killAt, time.Since(killed).Round(time.Millisecond), attempts)
	if next := c.leader(t, time.Minute); next == lead {
		t.Errorf("the killed leader %s still answers", lead.host)
	}
	ids, _ = c.chat(t, nil)
	c.checkOutput(t, "on the new leader", ids)
}

// TestEtcdMemberKilled: `docker kill` of etcd's raft leader leaves a
// quorum of two. Generations go on, and the control plane still works on
// it: a worker killed afterwards is fenced and replaced by the spare (a
// new placement written to etcd) without a lost request.
func TestEtcdMemberKilled(t *testing.T) {
	c := startCluster(t)
	victim := c.etcdLeader(t)
	victim.kill(t)
	ids, _ := c.chat(t, nil)
	c.checkOutput(t, "one etcd member down", ids)

	epoch, layout := c.layout(t)
	w := c.worker(t, layout[0])
	ids, _ = c.chat(t, func() { w.kill(t) })
	c.checkOutput(t, "a worker killed with one etcd member down", ids)
	clustertest.Eventually(t, time.Minute, func() error {
		e, l := c.layout(t)
		if e == epoch || slices.Contains(l, w.host) || len(l) != workers {
			return fmt.Errorf("placement epoch %d has %v; want a new epoch of %d workers without %s", e, l, workers, w.host)
		}
		return nil
	})
}

// etcdLeader returns the etcd member that leads the raft group.
func (c *cluster) etcdLeader(t *testing.T) *container {
	t.Helper()
	cli := c.st.Client()
	var got *container
	clustertest.Eventually(t, 30*time.Second, func() error {
		for _, e := range c.etcd {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := cli.Status(ctx, "http://"+net.JoinHostPort(e.ip, "2379"))
			cancel()
			if err != nil {
				return err
			}
			if s.Leader != 0 && s.Leader == s.Header.MemberId {
				got = e
				return nil
			}
		}
		return fmt.Errorf("no etcd member leads")
	})
	return got
}
