package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// placementKey is placement/<epoch>, the epoch zero-padded so keys sort.
func (s *Store) placementKey(epoch uint64) string {
	return fmt.Sprintf("%s%s%020d", s.prefix, KeyPlacement, epoch)
}

// PutModel writes the model manifest, if l still leads (ErrNotLeader
// otherwise).
func (s *Store) PutModel(ctx context.Context, l *Leader, m *pb.ModelManifest) error {
	key := s.prefix + KeyModel
	op := "put " + key
	if l == nil {
		return fmt.Errorf("store: %s: %w", op, ErrNotLeader)
	}
	val, err := s.marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(l.guard()).Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: %s by %s: %w", op, l.id, ErrNotLeader)
	}
	return nil
}

// Model returns the model manifest; ErrNotFound when none was written.
func (s *Store) Model(ctx context.Context) (*pb.ModelManifest, error) {
	m := new(pb.ModelManifest)
	if _, err := s.get(ctx, "model", s.prefix+KeyModel, m); err != nil {
		return nil, err
	}
	return m, nil
}

// PublishPlacement writes placement/<rec.Epoch> and placement/current in
// one transaction, guarded by l's election key (ErrNotLeader) and by
// placement/current not having changed since it was read. rec.Epoch must
// exceed the current epoch (ErrStaleEpoch). A concurrent change of current
// is retried once. rec.Leader is set to l.ID().
func (s *Store) PublishPlacement(ctx context.Context, l *Leader, rec *pb.PlacementRecord) error {
	op := fmt.Sprintf("publish placement %d", rec.GetEpoch())
	if l == nil {
		return fmt.Errorf("store: %s: %w", op, ErrNotLeader)
	}
	rec.Leader = l.id
	val, err := s.marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	cur := s.prefix + KeyPlacementCurrent
	for attempt := 0; ; attempt++ {
		var (
			curEpoch uint64
			curRev   int64 // 0: no current yet
		)
		got, err := s.cli.Get(ctx, cur)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if len(got.Kvs) > 0 {
			old := new(pb.PlacementRecord)
			if err := s.unmarshal(cur, got.Kvs[0].Value, old); err != nil {
				return err
			}
			curEpoch, curRev = old.GetEpoch(), got.Kvs[0].ModRevision
			if rec.GetEpoch() <= curEpoch {
				return fmt.Errorf("store: %s: current is %d: %w", op, curEpoch, ErrStaleEpoch)
			}
		}
		resp, err := s.cli.Txn(ctx).
			If(l.guard(), clientv3.Compare(clientv3.ModRevision(cur), "=", curRev)).
			Then(clientv3.OpPut(s.placementKey(rec.GetEpoch()), val), clientv3.OpPut(cur, val)).
			Else(clientv3.OpGet(l.key)).
			Commit()
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if resp.Succeeded {
			return nil
		}
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 0 || kvs[0].CreateRevision != l.rev {
			return fmt.Errorf("store: %s by %s: %w", op, l.id, ErrNotLeader)
		}
		if attempt == 1 {
			return fmt.Errorf("store: %s: placement/current keeps changing: %w", op, ErrStaleEpoch)
		}
	}
}

// CurrentPlacement returns placement/current; ErrNotFound when none.
func (s *Store) CurrentPlacement(ctx context.Context) (*pb.PlacementRecord, error) {
	rec := new(pb.PlacementRecord)
	if _, err := s.get(ctx, "current placement", s.prefix+KeyPlacementCurrent, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// Placement returns placement/<epoch>; ErrNotFound when absent.
func (s *Store) Placement(ctx context.Context, epoch uint64) (*pb.PlacementRecord, error) {
	rec := new(pb.PlacementRecord)
	if _, err := s.get(ctx, fmt.Sprintf("placement %d", epoch), s.placementKey(epoch), rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// WatchPlacement returns a channel that receives the current placement
// first (if there is one), then every newer one. Epochs received strictly
// increase: an older or equal epoch is never sent. The channel holds one
// record; a record not yet read is replaced by a newer one, so a slow reader
// gets the latest and skips epochs in between. The watch is re-created
// after errors, compaction and etcd restarts (reading current again). The
// channel is closed when ctx ends; the reader need not drain it. Each
// record received is the reader's to keep.
func (s *Store) WatchPlacement(ctx context.Context) <-chan *pb.PlacementRecord {
	return s.watchRecord(ctx, s.prefix+KeyPlacementCurrent)
}

// watchRecord implements WatchPlacement for the placement record at cur.
func (s *Store) watchRecord(ctx context.Context, cur string) <-chan *pb.PlacementRecord {
	ch := make(chan *pb.PlacementRecord, 1)
	go func() {
		defer close(ch)
		sent, have := uint64(0), false
		offer := func(rec *pb.PlacementRecord) {
			if have && rec.GetEpoch() <= sent {
				return
			}
			sent, have = rec.GetEpoch(), true
			// This goroutine is the only sender: after taking out a
			// stale record there is room.
			select {
			case ch <- rec:
			default:
				select {
				case <-ch:
				default:
				}
				ch <- rec
			}
		}
		decode := func(b []byte) (*pb.PlacementRecord, bool) {
			rec := new(pb.PlacementRecord)
			if err := s.unmarshal(cur, b, rec); err != nil {
				s.log.Error("store: skipping undecodable placement", "err", err)
				return nil, false
			}
			return rec, true
		}
		wait := 100 * time.Millisecond
		for ctx.Err() == nil {
			rctx, cancel := s.reqCtx(ctx)
			got, err := s.cli.Get(rctx, cur)
			cancel()
			if err == nil {
				if len(got.Kvs) > 0 {
					if rec, ok := decode(got.Kvs[0].Value); ok {
						offer(rec)
					}
				}
				wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
				for resp := range s.cli.Watch(wctx, cur, clientv3.WithRev(got.Header.Revision+1)) {
					if err = resp.Err(); err != nil {
						break
					}
					wait = 100 * time.Millisecond
					for _, ev := range resp.Events {
						if ev.Type != clientv3.EventTypePut {
							continue
						}
						if rec, ok := decode(ev.Kv.Value); ok {
							offer(rec)
						}
					}
				}
				cancel()
			}
			if err != nil && ctx.Err() == nil {
				s.log.Debug("store: placement watch restarting", "err", err)
			}
			if !sleepCtx(ctx, wait) {
				return
			}
			wait = nextBackoff(wait)
		}
	}()
	return ch
}
