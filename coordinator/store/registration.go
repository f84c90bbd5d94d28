package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Registration is a process's record (workers/<id> or coordinators/<id>)
// attached to the process's own lease, kept alive in the background until
// Close or until the lease is lost. Its methods are safe for concurrent use.
type Registration struct {
	s     *Store
	key   string
	id    string
	kind  protoreflect.FullName
	lease clientv3.LeaseID

	stop     context.CancelFunc // ends the keepalive
	done     chan struct{}      // closed when the keepalive goroutine has exited
	lost     chan struct{}
	lostOnce sync.Once

	closeOnce sync.Once
	closeErr  error
}

// RegisterWorker grants a lease of ttl (at least 1s, rounded up to whole
// seconds), sets rec.LeaseId to it and puts workers/<rec.Id> on it if no
// such key exists (ErrExists otherwise), then keeps the lease alive until
// the Registration is closed or lost.
func (s *Store) RegisterWorker(ctx context.Context, rec *pb.WorkerRecord, ttl time.Duration) (*Registration, error) {
	if err := validID("worker", rec.GetId()); err != nil {
		return nil, err
	}
	return s.register(ctx, KeyWorkers, rec.GetId(), rec, ttl, func(id clientv3.LeaseID) { rec.LeaseId = int64(id) })
}

// RegisterCoordinator is RegisterWorker for coordinators/<rec.Id>.
func (s *Store) RegisterCoordinator(ctx context.Context, rec *pb.CoordinatorRecord, ttl time.Duration) (*Registration, error) {
	if err := validID("coordinator", rec.GetId()); err != nil {
		return nil, err
	}
	return s.register(ctx, KeyCoordinators, rec.GetId(), rec, ttl, func(clientv3.LeaseID) {})
}

func (s *Store) register(ctx context.Context, dir, id string, rec proto.Message, ttl time.Duration, setLease func(clientv3.LeaseID)) (*Registration, error) {
	secs, err := ttlSeconds(ttl)
	if err != nil {
		return nil, err
	}
	key := s.prefix + dir + id
	op := "register " + key
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	grant, err := s.cli.Grant(rctx, secs)
	if err != nil {
		return nil, s.fail(rctx, op, err)
	}
	setLease(grant.ID)
	r := &Registration{
		s: s, key: key, id: id, kind: rec.ProtoReflect().Descriptor().FullName(), lease: grant.ID,
		done: make(chan struct{}), lost: make(chan struct{}),
	}
	val, err := s.marshal(rec)
	if err != nil {
		r.revoke()
		return nil, err
	}
	resp, err := s.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(grant.ID))).
		Commit()
	if err != nil {
		r.revoke()
		return nil, s.fail(rctx, op, err)
	}
	if !resp.Succeeded {
		r.revoke()
		return nil, fmt.Errorf("store: %s: %w", op, ErrExists)
	}
	kactx, stop := context.WithCancel(context.Background())
	ka, err := s.cli.KeepAlive(kactx, grant.ID)
	if err != nil {
		stop()
		r.revoke()
		return nil, s.fail(rctx, op, err)
	}
	r.stop = stop
	go r.keepAlive(kactx, ka)
	return r, nil
}

// keepAlive drains the keepalive responses. The etcd client closes ka when
// the lease is revoked or expired, when no renewal succeeded for a TTL, or
// when kactx ends (Close).
func (r *Registration) keepAlive(kactx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for range ka {
	}
	r.lostOnce.Do(func() { close(r.lost) })
	if kactx.Err() != nil {
		return // Close: it revokes
	}
	r.s.log.Warn("store: registration lost its lease", "key", r.key, "lease", int64(r.lease))
	// Make sure the key goes: the lease may still exist if only the
	// renewals failed. Close cancels kactx and so this revoke, and so does
	// closing the Store (the client's context ends).
	ctx, cancel := context.WithTimeout(r.s.cli.Ctx(), r.s.reqTO)
	defer cancel()
	stop := context.AfterFunc(kactx, cancel)
	defer stop()
	r.s.cli.Revoke(ctx, r.lease)
}

// LeaseID returns the registration's etcd lease.
func (r *Registration) LeaseID() int64 { return int64(r.lease) }

// Lost returns a channel closed once the lease is known to be gone: revoked
// (the leader fenced the process, see FenceWorker), expired, or not renewed
// for a whole TTL (the client gave up). An etcd outage shorter than the TTL
// does not close it: renewals resume when etcd is back. Close closes it too.
// After Lost the process must stop acting on its registration (re-register
// under a new lease to come back).
func (r *Registration) Lost() <-chan struct{} { return r.lost }

// Update rewrites the registration's value on the same lease. rec must be of
// the registered type (*pb.WorkerRecord or *pb.CoordinatorRecord) with the
// same id; a WorkerRecord's LeaseId is set. ErrFenced when the lease is gone.
func (r *Registration) Update(ctx context.Context, rec proto.Message) error {
	op := "update " + r.key
	if got := rec.ProtoReflect().Descriptor().FullName(); got != r.kind {
		return fmt.Errorf("store: %s: record is %s, registered %s", op, got, r.kind)
	}
	if withID, ok := rec.(interface{ GetId() string }); ok && withID.GetId() != r.id {
		return fmt.Errorf("store: %s: record id %q is not the registered %q", op, withID.GetId(), r.id)
	}
	select {
	case <-r.lost:
		return fmt.Errorf("store: %s: %w", op, ErrFenced)
	default:
	}
	if w, ok := rec.(*pb.WorkerRecord); ok {
		w.LeaseId = int64(r.lease)
	}
	val, err := r.s.marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := r.s.reqCtx(ctx)
	defer cancel()
	if _, err := r.s.cli.Put(ctx, r.key, val, clientv3.WithLease(r.lease)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("store: %s: %w", op, ErrFenced)
		}
		return r.s.fail(ctx, op, err)
	}
	return nil
}

// Close stops the keepalive and revokes the lease, deleting the key. It
// waits for the background goroutine; later calls return the first's result.
func (r *Registration) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.done
		rctx, cancel := r.s.reqCtx(ctx)
		defer cancel()
		if _, err := r.s.cli.Revoke(rctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.closeErr = r.s.fail(rctx, "close "+r.key, err)
		}
	})
	return r.closeErr
}

// revoke releases the lease of a registration that never started.
func (r *Registration) revoke() {
	ctx, cancel := context.WithTimeout(context.Background(), r.s.reqTO)
	defer cancel()
	r.s.cli.Revoke(ctx, r.lease)
}

// Workers returns the registered workers, sorted by id.
func (s *Store) Workers(ctx context.Context) ([]*pb.WorkerRecord, error) {
	return list(ctx, s, KeyWorkers, func() *pb.WorkerRecord { return new(pb.WorkerRecord) })
}

// Coordinators returns the registered coordinators, sorted by id.
func (s *Store) Coordinators(ctx context.Context) ([]*pb.CoordinatorRecord, error) {
	return list(ctx, s, KeyCoordinators, func() *pb.CoordinatorRecord { return new(pb.CoordinatorRecord) })
}

func list[T interface {
	proto.Message
	GetId() string
}](ctx context.Context, s *Store, dir string, newT func() T) ([]T, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+dir, clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail(ctx, "list "+s.prefix+dir, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m := newT()
		if err := s.unmarshal(string(kv.Key), kv.Value, m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(a.GetId(), b.GetId()) })
	return out, nil
}

// FenceWorker revokes the lease workers/<id> is attached to: the key goes,
// and the worker sees Lost and ErrFenced. A missing key is not an error.
func (s *Store) FenceWorker(ctx context.Context, id string) error {
	if err := validID("worker", id); err != nil {
		return err
	}
	key := s.prefix + KeyWorkers + id
	op := "fence " + key
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	kv := resp.Kvs[0]
	if kv.Lease == 0 { // written by hand without a lease
		_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(key)).Commit()
		return s.fail(ctx, op, err)
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return s.fail(ctx, op, err)
	}
	return nil
}

// WatchWorkers returns a channel that receives a signal after every change
// under workers/. The first signal comes once the watch is in place (read
// Workers then); later signals are coalesced (buffer 1: a signal pending
// when more changes happen stands for all of them), so re-read Workers on
// each. The watch is re-created after errors, compaction and etcd restarts,
// with a signal each time (changes may have been missed). The channel is
// closed when ctx ends; the reader need not drain it.
func (s *Store) WatchWorkers(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		signal := func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		wait := 100 * time.Millisecond
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for resp := range s.cli.Watch(wctx, s.prefix+KeyWorkers, clientv3.WithPrefix(), clientv3.WithCreatedNotify()) {
				if err := resp.Err(); err != nil {
					s.log.Debug("store: workers watch ended", "err", err)
					break
				}
				if resp.Created || len(resp.Events) > 0 {
					signal()
					wait = 100 * time.Millisecond
				}
			}
			cancel()
			if !sleepCtx(ctx, wait) {
				return
			}
			wait = nextBackoff(wait)
		}
	}()
	return ch
}
