package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// PutExpertStats writes stats/experts/<rec.Id> under reg's lease, so the
// statistics of a worker that is gone disappear with its registration.
func (s *Store) PutExpertStats(ctx context.Context, reg *Registration, rec *pb.ExpertStatsRecord) error {
	if err := validID("worker", rec.GetId()); err != nil {
		return err
	}
	key := s.prefix + KeyStatsExperts + "/" + rec.GetId()
	val, err := s.marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, key, val, clientv3.WithLease(reg.lease)); err != nil {
		return s.fail(ctx, "put "+key, err)
	}
	return nil
}

// ExpertStats returns every worker's statistics record, sorted by id.
func (s *Store) ExpertStats(ctx context.Context) ([]*pb.ExpertStatsRecord, error) {
	return list(ctx, s, KeyStatsExperts+"/", func() *pb.ExpertStatsRecord { return new(pb.ExpertStatsRecord) })
}

// Cordon writes cordoned/<rec.Id>, if l still leads (ErrNotLeader).
func (s *Store) Cordon(ctx context.Context, l *Leader, rec *pb.CordonRecord) error {
	if err := validID("worker", rec.GetId()); err != nil {
		return err
	}
	return s.leaderTxn(ctx, l, "cordon "+rec.GetId(), func() ([]clientv3.Op, error) {
		val, err := s.marshal(rec)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(s.prefix+KeyCordoned+rec.GetId(), val)}, nil
	})
}

// Uncordon deletes cordoned/<id>, if l still leads; it reports whether
// the worker was cordoned.
func (s *Store) Uncordon(ctx context.Context, l *Leader, id string) (bool, error) {
	if err := validID("worker", id); err != nil {
		return false, err
	}
	if l == nil {
		return false, fmt.Errorf("store: uncordon %s: %w", id, ErrNotLeader)
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(l.guard()).Then(clientv3.OpDelete(s.prefix + KeyCordoned + id)).Commit()
	if err != nil {
		return false, s.fail(ctx, "uncordon "+id, err)
	}
	if !resp.Succeeded {
		return false, fmt.Errorf("store: uncordon %s by %s: %w", id, l.id, ErrNotLeader)
	}
	return resp.Responses[0].GetResponseDeleteRange().GetDeleted() > 0, nil
}

// Cordoned returns the cordoned workers, sorted by id.
func (s *Store) Cordoned(ctx context.Context) ([]*pb.CordonRecord, error) {
	return list(ctx, s, KeyCordoned, func() *pb.CordonRecord { return new(pb.CordonRecord) })
}

// PreparePlacement writes placement/<rec.Epoch> and placement/next, the
// first phase of a live change: the workers rec names load it while the
// current epoch serves. rec.Epoch must exceed every epoch written so far
// (ErrStaleEpoch); l must lead (ErrNotLeader).
func (s *Store) PreparePlacement(ctx context.Context, l *Leader, rec *pb.PlacementRecord) error {
	if l == nil {
		return fmt.Errorf("store: prepare placement %d: %w", rec.GetEpoch(), ErrNotLeader)
	}
	latest, err := s.LatestEpoch(ctx)
	if err != nil {
		return err
	}
	if rec.GetEpoch() <= latest {
		return fmt.Errorf("store: prepare placement %d: epoch %d was written: %w", rec.GetEpoch(), latest, ErrStaleEpoch)
	}
	rec.Leader = l.id
	return s.leaderTxn(ctx, l, fmt.Sprintf("prepare placement %d", rec.GetEpoch()), func() ([]clientv3.Op, error) {
		val, err := s.marshal(rec)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(s.placementKey(rec.GetEpoch()), val), clientv3.OpPut(s.prefix+KeyPlacementNext, val)}, nil
	})
}

// ClearNext deletes placement/next (after the change committed or was
// abandoned), if l still leads.
func (s *Store) ClearNext(ctx context.Context, l *Leader) error {
	return s.leaderTxn(ctx, l, "clear placement/next", func() ([]clientv3.Op, error) {
		return []clientv3.Op{clientv3.OpDelete(s.prefix + KeyPlacementNext)}, nil
	})
}

// NextPlacement returns placement/next; ErrNotFound when no change is
// being prepared.
func (s *Store) NextPlacement(ctx context.Context) (*pb.PlacementRecord, error) {
	rec := new(pb.PlacementRecord)
	if _, err := s.get(ctx, "next placement", s.prefix+KeyPlacementNext, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// LatestEpoch returns the highest epoch under placement/<epoch> (0 when
// none): a new epoch must exceed it, whether it was committed or only
// prepared.
func (s *Store) LatestEpoch(ctx context.Context) (uint64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	dir := s.prefix + KeyPlacement
	resp, err := s.cli.Get(ctx, dir+"0", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend),
		clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return 0, s.fail(ctx, "latest placement epoch", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(string(resp.Kvs[0].Key), dir), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: placement key %q: %w", resp.Kvs[0].Key, err)
	}
	return n, nil
}

// WatchNextPlacement is WatchPlacement for placement/next: the prepared
// epochs, each newer than the last sent.
func (s *Store) WatchNextPlacement(ctx context.Context) <-chan *pb.PlacementRecord {
	return s.watchRecord(ctx, s.prefix+KeyPlacementNext)
}

// leaderTxn commits ops guarded by l's election key.
func (s *Store) leaderTxn(ctx context.Context, l *Leader, op string, ops func() ([]clientv3.Op, error)) error {
	if l == nil {
		return fmt.Errorf("store: %s: %w", op, ErrNotLeader)
	}
	then, err := ops()
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(l.guard()).Then(then...).Commit()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: %s by %s: %w", op, l.id, ErrNotLeader)
	}
	return nil
}

// StatsFresh reports whether rec was updated within maxAge of now.
func StatsFresh(rec *pb.ExpertStatsRecord, now time.Time, maxAge time.Duration) bool {
	return now.Sub(time.UnixMilli(rec.GetUpdatedUnixMs())) <= maxAge
}
