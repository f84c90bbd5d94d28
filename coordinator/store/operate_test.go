package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func TestExpertStatsLiveWithTheLease(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		s, ctx := open(t, e), ctxT(t)
		reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w1", Addr: "a"}, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rec := &pb.ExpertStatsRecord{Id: "w1", WindowMs: 1000, Counts: []uint64{1, 2, 3}, UpdatedUnixMs: time.Now().UnixMilli()}
		if err := s.PutExpertStats(ctx, reg, rec); err != nil {
			t.Fatal(err)
		}
		got, err := s.ExpertStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]*pb.ExpertStatsRecord{rec}, got, protocmp.Transform()); diff != "" {
			t.Errorf("ExpertStats (-want +got):\n%s", diff)
		}
		if err := s.FenceWorker(ctx, "w1"); err != nil {
			t.Fatal(err)
		}
		got, err = s.ExpertStats(ctx)
		if err != nil || len(got) != 0 {
			t.Errorf("after the lease went: %v, %v; want no record", got, err)
		}
		if err := s.PutExpertStats(ctx, reg, &pb.ExpertStatsRecord{Id: "a/b"}); err == nil {
			t.Error("an id with a slash was accepted")
		}
	})
}

func TestCordonsAndNextPlacement(t *testing.T) {
	forEachKind(t, func(t *testing.T, e *storetest.Etcd) {
		s, ctx := open(t, e), ctxT(t)
		l, err := s.Campaign(ctx, "c1", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Cordon(ctx, l, &pb.CordonRecord{Id: "w2", Reason: "drain"}); err != nil {
			t.Fatal(err)
		}
		cords, err := s.Cordoned(ctx)
		if err != nil || len(cords) != 1 || cords[0].Id != "w2" {
			t.Fatalf("Cordoned = %v, %v; want w2", cords, err)
		}
		for _, want := range []bool{true, false} {
			was, err := s.Uncordon(ctx, l, "w2")
			if err != nil || was != want {
				t.Errorf("Uncordon = %v, %v; want %v", was, err, want)
			}
		}

		if n, err := s.LatestEpoch(ctx); err != nil || n != 0 {
			t.Fatalf("LatestEpoch of an empty store = %d, %v", n, err)
		}
		if err := s.PublishPlacement(ctx, l, &pb.PlacementRecord{Epoch: 1}); err != nil {
			t.Fatal(err)
		}
		watch := s.WatchNextPlacement(ctx)
		if err := s.PreparePlacement(ctx, l, &pb.PlacementRecord{Epoch: 2, Reason: "rebalance"}); err != nil {
			t.Fatal(err)
		}
		select {
		case rec := <-watch:
			if rec.Epoch != 2 {
				t.Errorf("watched next epoch %d, want 2", rec.Epoch)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the prepared epoch was not watched")
		}
		cur, err := s.CurrentPlacement(ctx)
		if err != nil || cur.Epoch != 1 {
			t.Errorf("current after prepare = %v, %v; want epoch 1 still", cur, err)
		}
		if n, err := s.LatestEpoch(ctx); err != nil || n != 2 {
			t.Errorf("LatestEpoch = %d, %v; want 2", n, err)
		}
		if err := s.PreparePlacement(ctx, l, &pb.PlacementRecord{Epoch: 2}); !errors.Is(err, store.ErrStaleEpoch) {
			t.Errorf("preparing epoch 2 again: %v, want ErrStaleEpoch", err)
		}
		if next, err := s.NextPlacement(ctx); err != nil || next.Epoch != 2 {
			t.Errorf("NextPlacement = %v, %v", next, err)
		}
		if err := s.ClearNext(ctx, l); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NextPlacement(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("NextPlacement after ClearNext: %v, want ErrNotFound", err)
		}
		if err := s.Cordon(ctx, nil, &pb.CordonRecord{Id: "w1"}); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("Cordon without a leader: %v, want ErrNotLeader", err)
		}
	})
}
