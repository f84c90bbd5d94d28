package membership

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestJoinConverges(t *testing.T) {
	w0 := testConfig("worker-0", RoleWorker, nil)
	w0.Meta = map[string]string{"addr": "127.0.0.1:7001"}
	w1 := testConfig("worker-1", RoleWorker, nil)
	w1.Meta = map[string]string{"addr": "127.0.0.1:7002"}
	ms := newCluster(t, testConfig("coordinator-0", RoleCoordinator, nil), w0, w1)

	want := []Member{
		{Name: "coordinator-0", Role: RoleCoordinator, Addr: ms[0].Addr()},
		{Name: "worker-0", Role: RoleWorker, Addr: ms[1].Addr(), Meta: map[string]string{"addr": "127.0.0.1:7001"}},
		{Name: "worker-1", Role: RoleWorker, Addr: ms[2].Addr(), Meta: map[string]string{"addr": "127.0.0.1:7002"}},
	}
	for i, m := range ms {
		if diff := cmp.Diff(want, m.Members()); diff != "" {
			t.Errorf("%s: Members() (-want +got):\n%s", want[i].Name, diff)
		}
		if diff := cmp.Diff(want[i], m.Local()); diff != "" {
			t.Errorf("Local() (-want +got):\n%s", diff)
		}
		for _, other := range want {
			if _, ok := m.rec.find(EventJoin, other.Name, time.Time{}); !ok {
				t.Errorf("%s got no EventJoin for %s", want[i].Name, other.Name)
			}
		}
	}
}

func TestShutdownIsDead(t *testing.T) {
	ms := threeMembers(t)
	gone := ms[2]
	name := gone.Local().Name
	killed := time.Now()
	if err := gone.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 15*time.Second, m.Local().Name+" gets EventDead for "+name, func() bool {
			_, ok := m.rec.find(EventDead, name, killed)
			return ok
		})
		e, _ := m.rec.find(EventDead, name, killed)
		t.Logf("%s: %s dead after %v", m.Local().Name, name, e.at.Sub(killed).Round(time.Millisecond))
		if _, ok := m.rec.find(EventLeave, name, time.Time{}); ok {
			t.Errorf("%s got EventLeave for %s, which was shut down without Leave", m.Local().Name, name)
		}
		waitFor(t, 5*time.Second, m.Local().Name+" drops "+name+" from Members", func() bool {
			return !slices.Contains(names(m.Members()), name)
		})
	}
}

func TestLeaveIsNotDead(t *testing.T) {
	ms := threeMembers(t)
	gone := ms[2]
	name := gone.Local().Name
	if err := gone.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 10*time.Second, m.Local().Name+" gets EventLeave for "+name, func() bool {
			_, ok := m.rec.find(EventLeave, name, time.Time{})
			return ok
		})
		if _, ok := m.rec.find(EventDead, name, time.Time{}); ok {
			t.Errorf("%s got EventDead for %s, which left gracefully", m.Local().Name, name)
		}
		if got := names(m.Members()); slices.Contains(got, name) {
			t.Errorf("%s: Members() = %v after %s left", m.Local().Name, got, name)
		}
	}
	if err := gone.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v; want nil", err)
	}
	if err := gone.UpdateMeta(map[string]string{"a": "b"}); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateMeta after Leave: %v; want ErrClosed", err)
	}
}

func TestUpdateMeta(t *testing.T) {
	ms := threeMembers(t)
	src := ms[1]
	name := src.Local().Name
	meta := map[string]string{"addr": "10.0.0.7:7070", "device": "cuda:0"}
	since := time.Now()
	if err := src.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	meta["addr"] = "changed after the call" // the Membership holds its own copy
	want := map[string]string{"addr": "10.0.0.7:7070", "device": "cuda:0"}
	if diff := cmp.Diff(want, src.Local().Meta); diff != "" {
		t.Errorf("Local().Meta (-want +got):\n%s", diff)
	}
	for _, m := range []testMember{ms[0], ms[2]} {
		waitFor(t, 10*time.Second, m.Local().Name+" gets EventUpdate for "+name, func() bool {
			_, ok := m.rec.find(EventUpdate, name, since)
			return ok
		})
		e, _ := m.rec.find(EventUpdate, name, since)
		if diff := cmp.Diff(want, e.Member.Meta); diff != "" {
			t.Errorf("%s: EventUpdate meta (-want +got):\n%s", m.Local().Name, diff)
		}
		i := slices.IndexFunc(m.Members(), func(mb Member) bool { return mb.Name == name })
		if i < 0 {
			t.Fatalf("%s: %s missing from Members()", m.Local().Name, name)
		}
		if diff := cmp.Diff(want, m.Members()[i].Meta); diff != "" {
			t.Errorf("%s: Members() meta of %s (-want +got):\n%s", m.Local().Name, name, diff)
		}
	}
}

func TestRestartRejoins(t *testing.T) {
	ms := threeMembers(t)
	name := ms[2].Local().Name
	oldAddr := ms[2].Addr()
	killed := time.Now()
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 15*time.Second, m.Local().Name+" gets EventDead for "+name, func() bool {
			_, ok := m.rec.find(EventDead, name, killed)
			return ok
		})
	}

	// The same name on a new port, as a restarted process gets.
	restarted := newMember(t, testConfig(name, RoleWorker, nil))
	if restarted.Addr() == oldAddr {
		t.Logf("restarted on the old address %s", oldAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := restarted.Join(ctx, []string{ms[0].Addr()}); err != nil {
		t.Fatalf("Join after restart: %v", err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 15*time.Second, m.Local().Name+" sees the restarted "+name+" alive", func() bool {
			i := slices.IndexFunc(m.Members(), func(mb Member) bool { return mb.Name == name })
			return i >= 0 && m.Members()[i].Addr == restarted.Addr()
		})
		if _, ok := m.rec.find(EventJoin, name, killed); !ok {
			t.Errorf("%s got no EventJoin for the restarted %s", m.Local().Name, name)
		}
		// In order per member: join, dead, join (a spurious suspicion
		// under load may add events, never reorder these).
		if got := m.rec.kinds(name); !isSubsequence([]EventKind{EventJoin, EventDead, EventJoin}, got) {
			t.Errorf("%s: events for %s = %v; want join, dead, join in order", m.Local().Name, name, got)
		}
	}
	waitFor(t, 10*time.Second, "the restarted member sees every member", func() bool {
		return len(restarted.Members()) == 3
	})
}

func isSubsequence(want, got []EventKind) bool {
	i := 0
	for _, k := range got {
		if i < len(want) && k == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestMetaTooLarge(t *testing.T) {
	big := map[string]string{"blob": strings.Repeat("x", MetaMaxSize)}

	cfg := testConfig("worker-0", RoleWorker, nil)
	cfg.Meta = big
	if _, err := New(cfg); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("New with %d-byte meta: %v; want ErrMetaTooLarge", MetaMaxSize, err)
	}

	cfg.Meta = map[string]string{"addr": "127.0.0.1:7001"}
	m := newMember(t, cfg)
	if err := m.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta with %d-byte meta: %v; want ErrMetaTooLarge", MetaMaxSize, err)
	}
	if diff := cmp.Diff(cfg.Meta, m.Local().Meta); diff != "" {
		t.Errorf("Local().Meta after a refused update (-want +got):\n%s", diff)
	}
}

func TestJoinEdges(t *testing.T) {
	m := newMember(t, testConfig("worker-0", RoleWorker, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if n, err := m.Join(ctx, []string{m.Addr()}); n != 0 || err != nil {
		t.Errorf("Join(own address) = %d, %v; want 0, nil", n, err)
	}
	if n, err := m.Join(ctx, nil); n != 0 || err != nil {
		t.Errorf("Join(nil) = %d, %v; want 0, nil", n, err)
	}

	// A port nobody listens on: the dial is refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if n, err := m.Join(ctx, []string{closed}); n != 0 || !errors.Is(err, ErrJoinFailed) {
		t.Errorf("Join(%s) = %d, %v; want 0, ErrJoinFailed", closed, n, err)
	}

	canceled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := m.Join(canceled, []string{closed}); !errors.Is(err, context.Canceled) {
		t.Errorf("Join with a canceled context: %v; want context.Canceled", err)
	}
}

func TestClosed(t *testing.T) {
	m, err := New(testConfig("worker-0", RoleWorker, nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown #%d: %v", i+1, err)
		}
	}
	if err := m.UpdateMeta(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateMeta after Shutdown: %v; want ErrClosed", err)
	}
	if err := m.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Shutdown: %v; want ErrClosed", err)
	}
	if _, err := m.Join(context.Background(), []string{"127.0.0.1:1"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Shutdown: %v; want ErrClosed", err)
	}
	if got := m.Local().Name; got != "worker-0" {
		t.Errorf("Local().Name after Shutdown = %q; want worker-0", got)
	}
}

// TestDetectionTimeDefaults measures, with DefaultConfig's timers, how long
// after a member stops the others get EventDead for it. Run it with
//
//	go test -race -run TestDetectionTimeDefaults -count=5 -v ./membership/
//
// to see the numbers; it fails only past a generous bound.
func TestDetectionTimeDefaults(t *testing.T) {
	var cfgs []Config
	for _, name := range []string{"coordinator-0", "worker-0", "worker-1"} {
		cfg := DefaultConfig()
		cfg.Name = name
		cfg.Log = testConfig(name, RoleWorker, nil).Log
		if name == "coordinator-0" {
			cfg.Role = RoleCoordinator
		}
		cfgs = append(cfgs, cfg)
	}
	ms := newCluster(t, cfgs...)
	name := ms[2].Local().Name
	killed := time.Now()
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 15*time.Second, m.Local().Name+" gets EventDead for "+name, func() bool {
			_, ok := m.rec.find(EventDead, name, killed)
			return ok
		})
		e, _ := m.rec.find(EventDead, name, killed)
		t.Logf("%s: %s dead after %v (DefaultConfig)", m.Local().Name, name, e.at.Sub(killed).Round(time.Millisecond))
	}
}

// TestSecretKey: members with the same key form a cluster; a member with
// another key, or none, cannot join it.
func TestSecretKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	withKey := func(name string, k []byte) Config {
		c := testConfig(name, RoleWorker, nil)
		c.SecretKey = k
		return c
	}
	ms := newCluster(t, withKey("worker-0", key), withKey("worker-1", key))
	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"other key", []byte("fedcba9876543210fedcba9876543210")},
		{"no key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t, withKey("stranger", tc.key))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if n, err := m.Join(ctx, []string{ms[0].Addr()}); n != 0 || !errors.Is(err, ErrJoinFailed) {
				t.Errorf("Join = %d, %v; want 0, ErrJoinFailed", n, err)
			}
			if got := len(ms[0].Members()); got != 2 {
				t.Errorf("the keyed cluster has %d members, want 2", got)
			}
		})
	}
}
