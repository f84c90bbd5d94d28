package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func TestOpenValidates(t *testing.T) {
	t.Parallel()
	good := store.DefaultConfig()
	for _, tc := range []struct {
		name string
		edit func(*store.Config)
	}{
		{"no endpoints", func(c *store.Config) { c.Endpoints = nil }},
		{"empty endpoint", func(c *store.Config) { c.Endpoints = []string{" "} }},
		{"prefix without slash", func(c *store.Config) { c.Prefix = "/moemesh" }},
		{"empty prefix", func(c *store.Config) { c.Prefix = "" }},
		{"zero dial timeout", func(c *store.Config) { c.DialTimeout = 0 }},
		{"negative request timeout", func(c *store.Config) { c.RequestTimeout = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			if s, err := store.Open(cfg); err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
		})
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	cfg := store.DefaultConfig()
	cfg.Endpoints = []string{"http://127.0.0.1:1"}
	cfg.DialTimeout = 300 * time.Millisecond
	start := time.Now()
	s, err := store.Open(cfg)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded against nothing")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open took %v with DialTimeout 300ms", d)
	}
}

func TestRoundTrip(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		w := &pb.WorkerRecord{
			Id: "w1", Addr: "10.0.0.1:7000", GossipAddr: "10.0.0.1:7946", Device: "cuda:0",
			MemoryBytes: 80 << 30, Capabilities: []string{"bf16-wire"}, State: pb.WorkerState(1),
			PlacementEpoch: 3, Error: "none", StartedUnixMs: 1700000000000,
		}
		reg, err := s.RegisterWorker(ctx, w, 5*time.Second)
		if err != nil {
			t.Fatalf("RegisterWorker: %v", err)
		}
		defer reg.Close(ctx)
		if w.LeaseId == 0 || w.LeaseId != reg.LeaseID() {
			t.Errorf("rec.LeaseId = %d, LeaseID() = %d", w.LeaseId, reg.LeaseID())
		}
		c := &pb.CoordinatorRecord{Id: "c1", GrpcAddr: ":9000", HttpAddr: ":8080", GossipAddr: ":7947", StartedUnixMs: 42}
		creg, err := s.RegisterCoordinator(ctx, c, 5*time.Second)
		if err != nil {
			t.Fatalf("RegisterCoordinator: %v", err)
		}
		defer creg.Close(ctx)

		l, err := s.Campaign(ctx, "c1", 5*time.Second)
		if err != nil {
			t.Fatalf("Campaign: %v", err)
		}
		defer l.Resign(ctx)
		m := &pb.ModelManifest{ModelDir: "/models/qwen3", Name: "qwen3-moe", ConfigJson: `{"a":1}`, WeightBytes: 1 << 40, Dtype: "bf16"}
		if err := s.PutModel(ctx, l, m); err != nil {
			t.Fatalf("PutModel: %v", err)
		}
		p := &pb.PlacementRecord{
			Epoch: 7, MeshEpoch: 2, WorkerIds: []string{"w1", "w2"}, Addrs: []string{"a1", "a2"},
			KvBlocks: 100, KvBlockSize: 16, ModelDir: "/models/qwen3", Spares: []string{"w3"},
			CreatedUnixMs: 5, Reason: "initial",
		}
		if err := s.PublishPlacement(ctx, l, p); err != nil {
			t.Fatalf("PublishPlacement: %v", err)
		}
		if p.Leader != "c1" {
			t.Errorf("PublishPlacement set Leader %q, want c1", p.Leader)
		}

		gotW, err := s.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gotC, err := s.Coordinators(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gotM, err := s.Model(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gotCur, err := s.CurrentPlacement(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gotP, err := s.Placement(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name      string
			want, got any
		}{
			{"workers", []*pb.WorkerRecord{w}, gotW},
			{"coordinators", []*pb.CoordinatorRecord{c}, gotC},
			{"model", m, gotM},
			{"current placement", p, gotCur},
			{"placement 7", p, gotP},
		} {
			if diff := cmp.Diff(tc.want, tc.got, protocmp.Transform()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tc.name, diff)
			}
		}

		// The keys are where docs/etcd.md says, readable JSON.
		resp, err := s.Client().Get(ctx, s.Prefix()+"placement/00000000000000000007")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("placement/<epoch> key: %v, %d kvs", err, len(resp.Kvs))
		}
		if v := string(resp.Kvs[0].Value); v[0] != '{' {
			t.Errorf("placement value %q is not JSON", v)
		}
		if _, err := s.Placement(ctx, 8); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Placement(8): %v, want ErrNotFound", err)
		}
	})
}

func TestNotFound(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		if _, err := s.Model(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Model: %v, want ErrNotFound", err)
		}
		if _, err := s.CurrentPlacement(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("CurrentPlacement: %v, want ErrNotFound", err)
		}
		if _, err := s.LeaderID(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LeaderID: %v, want ErrNotFound", err)
		}
		if ws, err := s.Workers(ctx); err != nil || len(ws) != 0 {
			t.Errorf("Workers = %v, %v; want none", ws, err)
		}
		if err := s.FenceWorker(ctx, "nobody"); err != nil {
			t.Errorf("FenceWorker(missing): %v", err)
		}
	})
}

func TestRegistration(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1", Addr: "a"}, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1", Addr: "b"}, 2*time.Second); !errors.Is(err, store.ErrExists) {
			t.Errorf("second RegisterWorker(w1): %v, want ErrExists", err)
		}
		if err := reg.Update(ctx, &pb.WorkerRecord{Id: "w1", Addr: "c", State: pb.WorkerState(2)}); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := reg.Update(ctx, &pb.WorkerRecord{Id: "w2"}); err == nil {
			t.Error("Update with another id succeeded")
		}
		if err := reg.Update(ctx, &pb.CoordinatorRecord{Id: "w1"}); err == nil {
			t.Error("Update with another record type succeeded")
		}
		ws, err := s.Workers(ctx)
		if err != nil || len(ws) != 1 || ws[0].Addr != "c" || ws[0].LeaseId != reg.LeaseID() {
			t.Fatalf("Workers = %v, %v; want w1 at c on lease %d", ws, err, reg.LeaseID())
		}
		if err := reg.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := reg.Close(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if !closed(reg.Lost()) {
			t.Error("Lost not closed after Close")
		}
		if ws, err := s.Workers(ctx); err != nil || len(ws) != 0 {
			t.Errorf("Workers after Close = %v, %v; want none", ws, err)
		}
		// The id is free again.
		reg2, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1"}, 2*time.Second)
		if err != nil {
			t.Fatalf("RegisterWorker after Close: %v", err)
		}
		reg2.Close(ctx)
	})
}

func TestFenceWorker(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		const ttl = 2 * time.Second
		reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1"}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close(ctx)
		if err := s.FenceWorker(ctx, "w1"); err != nil {
			t.Fatalf("FenceWorker: %v", err)
		}
		if ws, err := s.Workers(ctx); err != nil || len(ws) != 0 {
			t.Errorf("Workers after fencing = %v, %v; want none", ws, err)
		}
		// The worker learns at its next renewal (every TTL/3).
		waitFor(t, ttl+time.Second, "Lost closes after fencing", func() bool { return closed(reg.Lost()) })
		if err := reg.Update(ctx, &pb.WorkerRecord{Id: "w1"}); !errors.Is(err, store.ErrFenced) {
			t.Errorf("Update after fencing: %v, want ErrFenced", err)
		}
	})
}

func TestUpdateOnRevokedLease(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1"}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close(ctx)
		// Right after the revoke, before the keepalive notices.
		if _, err := s.Client().Revoke(ctx, clientv3.LeaseID(reg.LeaseID())); err != nil {
			t.Fatal(err)
		}
		if err := reg.Update(ctx, &pb.WorkerRecord{Id: "w1"}); !errors.Is(err, store.ErrFenced) {
			t.Errorf("Update on a revoked lease: %v, want ErrFenced", err)
		}
	})
}

func TestLeaseSurvivesOutage(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		const ttl = 5 * time.Second
		reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1"}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close(ctx)

		e.Stop()
		e.Start()
		restarted := time.Now()
		waitFor(t, ttl, "Update succeeds after the restart", func() bool {
			return reg.Update(ctx, &pb.WorkerRecord{Id: "w1", Addr: "after"}) == nil
		})
		// Keepalives resumed: the lease outlives a whole TTL after the restart.
		for time.Since(restarted) < ttl+time.Second {
			if closed(reg.Lost()) {
				t.Fatal("Lost closed after an outage shorter than the TTL")
			}
			time.Sleep(100 * time.Millisecond)
		}
		ws, err := s.Workers(ctx)
		if err != nil || len(ws) != 1 || ws[0].Addr != "after" {
			t.Errorf("Workers = %v, %v; want w1 still registered", ws, err)
		}
	})
}

func TestCampaign(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		const ttl = 2 * time.Second
		sa, sb, sc := open(t, e), open(t, e), open(t, e)
		a, err := sa.Campaign(ctx, "a", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := sa.LeaderID(ctx); err != nil || id != "a" {
			t.Fatalf("LeaderID = %q, %v; want a", id, err)
		}

		elected := func(s *store.Store, id string) <-chan *store.Leader {
			ch := make(chan *store.Leader, 1)
			go func() {
				l, err := s.Campaign(ctx, id, ttl)
				if err != nil {
					t.Errorf("Campaign(%s): %v", id, err)
				}
				ch <- l
			}()
			return ch
		}
		bch := elected(sb, "b")
		// b waits while a leads.
		shortly := time.NewTimer(300 * time.Millisecond)
		select {
		case <-bch:
			t.Fatal("b elected while a leads")
		case <-shortly.C:
		}

		// Handover on Resign.
		if err := a.Resign(ctx); err != nil {
			t.Fatalf("Resign: %v", err)
		}
		if err := a.Resign(ctx); err != nil {
			t.Errorf("second Resign: %v", err)
		}
		if !closed(a.Done()) {
			t.Error("Done not closed after Resign")
		}
		var b *store.Leader
		select {
		case b = <-bch:
		case <-time.After(ttl):
			t.Fatal("b not elected after a resigned")
		}
		if id, err := sb.LeaderID(ctx); err != nil || id != "b" {
			t.Fatalf("LeaderID = %q, %v; want b", id, err)
		}
		// A resigned leader can no longer write.
		if err := sa.PublishPlacement(ctx, a, &pb.PlacementRecord{Epoch: 1}); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("PublishPlacement by a resigned leader: %v, want ErrNotLeader", err)
		}
		if err := sa.PutModel(ctx, a, &pb.ModelManifest{}); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("PutModel by a resigned leader: %v, want ErrNotLeader", err)
		}
		if err := sb.PutModel(ctx, b, &pb.ModelManifest{Name: "m"}); err != nil {
			t.Errorf("PutModel by the leader: %v", err)
		}

		// Handover when b's process dies: its session expires within the TTL.
		cch := elected(sc, "c")
		sb.Close()
		lost := time.Now()
		select {
		case c := <-cch:
			if d := time.Since(lost); d > ttl+2*time.Second {
				t.Errorf("c elected %v after b died, TTL %v", d, ttl)
			}
			if id, err := sc.LeaderID(ctx); err != nil || id != "c" {
				t.Errorf("LeaderID = %q, %v; want c", id, err)
			}
			if c != nil {
				c.Resign(ctx)
			}
		case <-time.After(ttl + 3*time.Second):
			t.Fatal("c not elected after b's session expired")
		}
		if !closed(b.Done()) {
			t.Error("b's Done not closed after its client closed")
		}
	})
}

func TestCampaignCanceled(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		a, err := s.Campaign(ctx, "a", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Resign(ctx)
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := s.Campaign(cctx, "b", 2*time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Campaign with a lapsing ctx: %v, want DeadlineExceeded", err)
		}
		if id, _ := s.LeaderID(ctx); id != "a" {
			t.Errorf("LeaderID = %q, want a", id)
		}
	})
}

func TestPublishPlacementEpochs(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		l, err := s.Campaign(ctx, "c1", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Resign(ctx)
		for _, tc := range []struct {
			epoch uint64
			want  error
		}{
			{0, nil}, {1, nil}, {5, nil}, {5, store.ErrStaleEpoch}, {3, store.ErrStaleEpoch}, {0, store.ErrStaleEpoch}, {6, nil},
		} {
			err := s.PublishPlacement(ctx, l, &pb.PlacementRecord{Epoch: tc.epoch})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("PublishPlacement(%d): %v, want %v", tc.epoch, err, tc.want)
			}
		}
		cur, err := s.CurrentPlacement(ctx)
		if err != nil || cur.Epoch != 6 {
			t.Errorf("CurrentPlacement = %v, %v; want epoch 6", cur, err)
		}
		for _, ep := range []uint64{0, 1, 5, 6} {
			if _, err := s.Placement(ctx, ep); err != nil {
				t.Errorf("Placement(%d): %v", ep, err)
			}
		}
	})
}

func TestPublishPlacementRace(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		l, err := s.Campaign(ctx, "c1", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Resign(ctx)
		// Concurrent publishers: whatever wins, current ends at the highest
		// epoch that succeeded and never moved back.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() { errs[i] = s.PublishPlacement(ctx, l, &pb.PlacementRecord{Epoch: uint64(i + 1)}) })
		}
		wg.Wait()
		var best uint64
		for i, err := range errs {
			if err == nil {
				best = max(best, uint64(i+1))
			} else if !errors.Is(err, store.ErrStaleEpoch) {
				t.Errorf("PublishPlacement(%d): %v", i+1, err)
			}
		}
		cur, err := s.CurrentPlacement(ctx)
		if err != nil || cur.Epoch != best {
			t.Errorf("CurrentPlacement = %v, %v; want epoch %d", cur, err, best)
		}
	})
}

// recvEpoch waits for a placement on ch.
func recvEpoch(t *testing.T, ch <-chan *pb.PlacementRecord, d time.Duration) uint64 {
	t.Helper()
	select {
	case rec, ok := <-ch:
		if !ok {
			t.Fatal("placement watch closed")
		}
		return rec.Epoch
	case <-time.After(d):
		t.Fatalf("no placement within %v", d)
		return 0
	}
}

func TestWatchPlacement(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		l, err := s.Campaign(ctx, "c1", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Resign(ctx)
		publish := func(epoch uint64) {
			t.Helper()
			if err := s.PublishPlacement(ctx, l, &pb.PlacementRecord{Epoch: epoch}); err != nil {
				t.Fatalf("PublishPlacement(%d): %v", epoch, err)
			}
		}

		wctx, stop := context.WithCancel(ctx)
		ch := s.WatchPlacement(wctx) // before any placement
		publish(1)
		if got := recvEpoch(t, ch, 5*time.Second); got != 1 {
			t.Fatalf("first placement %d, want 1", got)
		}
		// A slow reader gets the latest; epochs never go back.
		publish(2)
		publish(3)
		waitFor(t, 5*time.Second, "epoch 3 arrives", func() bool {
			got := recvEpoch(t, ch, 5*time.Second)
			if got < 2 || got > 3 {
				t.Fatalf("got epoch %d after 1, want 2 or 3", got)
			}
			return got == 3
		})

		// A new watch starts with current.
		ch2 := s.WatchPlacement(wctx)
		if got := recvEpoch(t, ch2, 5*time.Second); got != 3 {
			t.Fatalf("new watch's first placement %d, want 3", got)
		}

		// The watch survives an etcd restart.
		e.Stop()
		e.Start()
		waitFor(t, 5*time.Second, "publish after the restart", func() bool {
			return s.PublishPlacement(ctx, l, &pb.PlacementRecord{Epoch: 4}) == nil
		})
		if got := recvEpoch(t, ch, 5*time.Second); got != 4 {
			t.Fatalf("after the restart got epoch %d, want 4", got)
		}
		if got := recvEpoch(t, ch2, 5*time.Second); got != 4 {
			t.Fatalf("second watch after the restart got epoch %d, want 4", got)
		}

		stop()
		waitFor(t, 5*time.Second, "the channel closes when ctx ends", func() bool {
			select {
			case _, ok := <-ch:
				return !ok
			default:
				return false
			}
		})
	})
}

func TestWatchWorkers(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		ctx := ctxT(t)
		s := open(t, e)
		wctx, stop := context.WithCancel(ctx)
		ch := s.WatchWorkers(wctx)
		wait := func(what string) {
			t.Helper()
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Fatalf("no signal: %s", what)
			}
		}
		wait("watch in place")
		for i := range 3 {
			// A fresh etcd on a loaded machine can miss the 2 s request
			// timeout once (its first fsyncs): retry what is unavailable.
			var reg *store.Registration
			waitFor(t, 20*time.Second, "register", func() bool {
				var err error
				reg, err = s.RegisterWorker(ctx, &pb.WorkerRecord{Id: fmt.Sprint("w", i)}, 2*time.Second)
				if err != nil && !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrExists) { // a timed-out attempt may have written the key; its lease expires
					t.Fatal(err)
				}
				return err == nil
			})
			wait("register")
			reg.Close(ctx)
			wait("close")
		}
		// After a restart the watch is back (and signals).
		e.Stop()
		e.Start()
		waitFor(t, 20*time.Second, "register after the restart", func() bool {
			reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "late"}, 2*time.Second)
			if err == nil {
				defer reg.Close(ctx)
			}
			return err == nil
		})
		wait("register after the restart")
		stop()
		waitFor(t, 5*time.Second, "the channel closes when ctx ends", func() bool {
			select {
			case _, ok := <-ch:
				return !ok
			default:
				return false
			}
		})
	})
}
