package membership

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests. It polls
// rather than checking once: a memberlist probe that was in flight at
// Shutdown runs on to its deadline (up to ProbeInterval times memberlist's
// awareness multiplier), and then it must be gone.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := waitNoLeaks(15 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoLeaks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testConfig returns a Config with shrunken timers: a stopped member is
// declared dead in well under a second, yet a member starved of CPU for a
// few hundred milliseconds still has time to refute a suspicion.
func testConfig(name string, role Role, rec *recorder) Config {
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.Role = role
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.ProbeTimeout = 50 * time.Millisecond
	cfg.SuspicionMult = 4 // 400 ms; with three members memberlist expects no confirmations
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.Log = slog.New(slog.DiscardHandler)
	if rec != nil {
		cfg.OnEvent = rec.record
	}
	return cfg
}

// stampedEvent is an Event and when it reached OnEvent.
type stampedEvent struct {
	Event
	at time.Time
}

// recorder collects the events one member receives. record never blocks.
type recorder struct {
	mu     sync.Mutex
	events []stampedEvent
}

func (r *recorder) record(e Event) {
	r.mu.Lock()
	r.events = append(r.events, stampedEvent{e, time.Now()})
	r.mu.Unlock()
}

// find returns the first event of kind for member name after since.
func (r *recorder) find(kind EventKind, name string, since time.Time) (stampedEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Member.Name == name && !e.at.Before(since) {
			return e, true
		}
	}
	return stampedEvent{}, false
}

// kinds returns the kinds of the events about member name, in order.
func (r *recorder) kinds(name string) []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EventKind
	for _, e := range r.events {
		if e.Member.Name == name {
			out = append(out, e.Kind)
		}
	}
	return out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newMember starts a member and shuts it down when the test ends.
func newMember(t *testing.T, cfg Config) *Membership {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.Name, err)
		}
	})
	return m
}

// testMember is one member of a test cluster and the events it received.
type testMember struct {
	*Membership
	rec *recorder
}

// newCluster starts one member per config (from testConfig unless cfgs is
// given), joins all to the first and waits until every member sees all.
func newCluster(t *testing.T, cfgs ...Config) []testMember {
	t.Helper()
	var ms []testMember
	for _, cfg := range cfgs {
		rec := &recorder{}
		cfg.OnEvent = rec.record
		ms = append(ms, testMember{newMember(t, cfg), rec})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range ms[1:] {
		if n, err := m.Join(ctx, []string{ms[0].Addr()}); err != nil || n != 1 {
			t.Fatalf("%s: Join(%s) = %d, %v; want 1, nil", m.Local().Name, ms[0].Addr(), n, err)
		}
	}
	for _, m := range ms {
		waitFor(t, 10*time.Second, m.Local().Name+" sees every member", func() bool {
			return len(m.Members()) == len(ms)
		})
	}
	return ms
}

// threeMembers is a cluster of a coordinator and two workers.
func threeMembers(t *testing.T) []testMember {
	t.Helper()
	return newCluster(t,
		testConfig("coordinator-0", RoleCoordinator, nil),
		testConfig("worker-0", RoleWorker, nil),
		testConfig("worker-1", RoleWorker, nil),
	)
}

// names returns the names of members.
func names(members []Member) []string {
	var out []string
	for _, m := range members {
		out = append(out, m.Name)
	}
	return out
}
