package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership is this process's member of the cluster's memberlist. Its
// methods are safe for concurrent use, except from inside Config.OnEvent.
type Membership struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist
	del *delegate

	bindPort int // the port actually bound (BindPort, or the one picked for 0)

	mu       sync.Mutex     // serializes Leave, UpdateMeta, Shutdown and joins.Add
	left     bool           // guarded by mu
	shutdown atomic.Bool    // set under mu, read anywhere
	joins    sync.WaitGroup // Join goroutines; Shutdown waits for them
}

// New validates cfg and starts listening on BindAddr:BindPort (TCP and UDP).
// It does not join anyone: call Join, or let others join this member. The
// local member's own EventJoin reaches cfg.OnEvent before New returns.
func New(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, err := encodeMeta(cfg.Role, cfg.Meta)
	if err != nil {
		return nil, err
	}
	cfg.Meta = cloneMeta(cfg.Meta)
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("member", cfg.Name)
	del := newDelegate(cfg, log, meta)

	// Start from memberlist's LAN settings and override the timers this
	// package tunes; the rest (indirect checks, awareness, compression,
	// gossip fan-out) keep memberlist's LAN values.
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipToTheDeadTime = cfg.PushPullInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	mc.RetransmitMult = cfg.RetransmitMult
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.SecretKey = cfg.SecretKey // with a key memberlist also refuses unencrypted traffic (GossipVerifyIncoming)
	mc.Delegate = del
	mc.Events = del
	mc.Logger = newStdLogger(log)
	if cfg.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort // memberlist replaces it with the picked port when BindPort is 0
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: listen on %s: %w",
			net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	m := &Membership{cfg: cfg, log: log, ml: ml, del: del, bindPort: mc.BindPort}
	log.Debug("membership: listening", "addr", m.Addr(), "role", cfg.Role)
	return m, nil
}

// Join contacts the seeds (host:port) one after another and syncs state
// with each, so that this member and the cluster learn of each other. Seeds
// equal to this member's own address are skipped, so every member can be
// given the same seed list; with no other seed Join returns (0, nil): this
// member starts the cluster.
//
// It returns how many seeds were contacted. It succeeds when at least one
// was; when none was the error wraps ErrJoinFailed. It returns when ctx is
// done, with ctx's error; a sync already under way then finishes in the
// background within TCPTimeout.
func (m *Membership) Join(ctx context.Context, seeds []string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("membership: join: %w", err)
	}
	others := m.otherSeeds(seeds)
	if len(others) == 0 {
		return 0, nil
	}

	m.mu.Lock()
	if m.shutdown.Load() {
		m.mu.Unlock()
		return 0, ErrClosed
	}
	m.joins.Add(1)
	m.mu.Unlock()

	var contacted atomic.Int64
	done := make(chan error, 1)
	go func() {
		defer m.joins.Done()
		var errs []error
		for _, seed := range others {
			if ctx.Err() != nil || m.shutdown.Load() {
				break
			}
			n, err := m.ml.Join([]string{seed})
			contacted.Add(int64(n))
			if err != nil {
				errs = append(errs, err)
			}
		}
		if contacted.Load() > 0 {
			done <- nil
			return
		}
		done <- fmt.Errorf("%w: none of %d seeds %v could be contacted: %w",
			ErrJoinFailed, len(others), others, errors.Join(errs...))
	}()

	select {
	case err := <-done:
		return int(contacted.Load()), err
	case <-ctx.Done():
		return int(contacted.Load()), fmt.Errorf("membership: join: %w", ctx.Err())
	}
}

// otherSeeds returns seeds without this member's own address.
func (m *Membership) otherSeeds(seeds []string) []string {
	self := map[string]bool{
		m.Addr(): true,
		net.JoinHostPort(m.cfg.BindAddr, strconv.Itoa(m.bindPort)): true,
	}
	var out []string
	for _, s := range seeds {
		if !self[s] {
			out = append(out, s)
		}
	}
	return out
}

// Members returns the alive members, this one included, sorted by Name. A
// member that is suspect (missed a probe but is not yet declared dead) is
// still alive. The caller owns the result.
func (m *Membership) Members() []Member { return m.del.members() }

// Addr returns this member's advertised host:port, the address to give
// other members as a seed.
func (m *Membership) Addr() string { return m.del.local().Addr }

// Local returns this member as the others see it.
func (m *Membership) Local() Member { return m.del.local() }

// UpdateMeta replaces this member's Meta and gossips it: the others get an
// EventUpdate with the new Meta. It fails with ErrMetaTooLarge, leaving Meta
// as it was, when the encoding exceeds MetaMaxSize, and with ErrClosed after
// Leave or Shutdown. It waits up to TCPTimeout for the gossip to go out; on
// a timeout the new Meta still reaches the others with the next full sync.
func (m *Membership) UpdateMeta(meta map[string]string) error {
	b, err := encodeMeta(m.cfg.Role, meta)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.left || m.shutdown.Load() {
		return ErrClosed
	}
	m.del.setMeta(b)
	if err := m.ml.UpdateNode(m.cfg.TCPTimeout); err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	return nil
}

// Leave tells the cluster that this member is going away on purpose: the
// others get EventLeave for it, not EventDead. It first gossips a leaving
// mark in its meta (memberlist alone cannot tell the two apart, see
// wireMeta), then memberlist's leave notice, waiting up to timeout (≤ 0
// means TCPTimeout) for each to go out. The member keeps answering probes
// until Shutdown, which should follow. Calling it again does nothing; after
// Shutdown it returns ErrClosed.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = m.cfg.TCPTimeout
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown.Load() {
		return ErrClosed
	}
	if m.left {
		return nil
	}
	m.left = true
	local := m.del.local()
	marked, err := encodeWire(wireMeta{Role: m.cfg.Role, Meta: local.Meta, Leaving: true})
	if err != nil {
		return err
	}
	m.del.setMeta(marked)
	if err := m.ml.UpdateNode(timeout); err != nil {
		// Go on: the leave notice matters more; without the mark the
		// others report EventDead.
		m.log.Warn("membership: leaving mark not gossiped in time", "err", err)
	}
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops this member at once: it closes its sockets and stops its
// timers, without telling anyone, so the others eventually get EventDead
// for it (call Leave first for EventLeave). It returns once every goroutine
// it started is done or finishing. Calling it again does nothing.
func (m *Membership) Shutdown() error {
	m.mu.Lock()
	if m.shutdown.Load() {
		m.mu.Unlock()
		return nil
	}
	m.shutdown.Store(true)
	err := m.ml.Shutdown()
	m.mu.Unlock()
	m.joins.Wait()
	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	return nil
}
