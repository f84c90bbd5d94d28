package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leader is a coordinator that won the election: it holds the key
// election/<lease> on its session's lease. Every model and placement write
// is guarded by that key. Its methods are safe for concurrent use.
type Leader struct {
	s        *Store
	id       string
	session  *concurrency.Session
	election *concurrency.Election
	key      string // the election key won
	rev      int64  // its create revision

	resignOnce sync.Once
	resignErr  error
}

// Campaign blocks until the coordinator id is elected leader or ctx ends.
// It opens a session (a lease of ttl, kept alive) and campaigns under
// election; if the session is lost while waiting it starts over with a new
// one. Unlike other calls it has no RequestTimeout: it waits as long as ctx.
func (s *Store) Campaign(ctx context.Context, id string, ttl time.Duration) (*Leader, error) {
	if err := validID("coordinator", id); err != nil {
		return nil, err
	}
	secs, err := ttlSeconds(ttl)
	if err != nil {
		return nil, err
	}
	wait := 100 * time.Millisecond
	for {
		l, err := s.campaign(ctx, id, secs)
		if err == nil || ctx.Err() != nil {
			return l, err
		}
		s.log.Warn("store: campaign failed; retrying", "id", id, "err", err)
		if !sleepCtx(ctx, wait) {
			return nil, fmt.Errorf("store: campaign %s: %w", id, ctx.Err())
		}
		wait = nextBackoff(wait)
	}
}

func (s *Store) campaign(ctx context.Context, id string, secs int64) (*Leader, error) {
	op := "campaign " + id
	gctx, cancel := s.reqCtx(ctx)
	grant, err := s.cli.Grant(gctx, secs)
	cancel()
	if err != nil {
		return nil, s.fail(gctx, op, err)
	}
	session, err := concurrency.NewSession(s.cli, concurrency.WithLease(grant.ID), concurrency.WithTTL(int(secs)))
	if err != nil {
		s.cli.Revoke(context.Background(), grant.ID) //nolint:errcheck // best effort; the lease expires anyway
		return nil, s.fail(ctx, op, err)
	}
	election := concurrency.NewElection(session, s.prefix+KeyElection)

	// Stop waiting when the session dies: a key on a dead lease can't lead.
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-session.Done():
			stop()
		case <-cctx.Done():
		}
	}()
	err = election.Campaign(cctx, id)
	if err == nil {
		// Campaign returns once the earlier keys are gone; make sure ours
		// is still there (the session may have ended just then).
		rctx, cancel := s.reqCtx(ctx)
		var resp *clientv3.GetResponse
		resp, err = s.cli.Get(rctx, election.Key())
		cancel()
		if err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != election.Rev()) {
			err = errors.New("election key gone while campaigning")
		}
	}
	if err != nil {
		session.Close() //nolint:errcheck // best effort: revokes the lease
		if ctx.Err() != nil {
			return nil, fmt.Errorf("store: %s: %w", op, ctx.Err())
		}
		return nil, s.fail(ctx, op, err)
	}
	return &Leader{s: s, id: id, session: session, election: election, key: election.Key(), rev: election.Rev()}, nil
}

// ID returns the leader's coordinator id.
func (l *Leader) ID() string { return l.id }

// Done returns a channel closed when leadership is lost: the session's lease
// was not renewed for a TTL, was revoked, or Resign was called. Writes after
// that fail with ErrNotLeader.
func (l *Leader) Done() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership (deleting the election key, so the next
// candidate is elected at once) and closes the session. Later calls return
// the first's result.
func (l *Leader) Resign(ctx context.Context) error {
	l.resignOnce.Do(func() {
		rctx, cancel := l.s.reqCtx(ctx)
		defer cancel()
		err := l.election.Resign(rctx)
		if cerr := l.session.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			l.resignErr = fmt.Errorf("store: resign %s: %w", l.id, err)
		}
	})
	return l.resignErr
}

// guard is the comparison every leader write carries: the leader's election
// key still exists with the create revision it won with.
func (l *Leader) guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// LeaderID returns the id of the current leader; ErrNotFound when none.
func (s *Store) LeaderID(ctx context.Context) (string, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+KeyElection+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", s.fail(ctx, "leader", err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("store: leader: %w", ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}

// FenceLeader ends the leadership of coordinator id when it holds it: it
// revokes the lease of id's election key, so a standby wins at once instead
// of waiting out the TTL. It is for a leader memberlist declared dead; a
// leader that was only cut off loses nothing it could still do, since its
// writes are guarded by that key (ErrNotLeader). Not leading, or no key,
// is not an error.
func (s *Store) FenceLeader(ctx context.Context, id string) error {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+KeyElection+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return s.fail(ctx, "fence leader "+id, err)
	}
	if len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != id {
		return nil
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return s.fail(ctx, "fence leader "+id, err)
	}
	return nil
}
