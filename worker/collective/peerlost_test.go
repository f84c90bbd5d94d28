package collective

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestOnPeerLost: closing one member's mesh makes every other member's
// callback fire once with that member's id and ErrPeerLost; the
// closed member's own callback stays silent (closing reports nothing).
func TestOnPeerLost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		victim int
	}{
		{"lowest id dies", 3, 0},
		{"middle dies", 3, 1},
		{"highest dies", 4, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type event struct {
				peer int
				err  error
			}
			var mu sync.Mutex
			got := make([][]event, tc.n)
			meshes := newCluster(t, tc.n, func(i int, c *MeshConfig) {
				c.OnPeerLost = func(peer int, err error) {
					mu.Lock()
					defer mu.Unlock()
					got[i] = append(got[i], event{peer, err})
				}
			})
			meshes[tc.victim].Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				done := true
				for i := range tc.n {
					if i != tc.victim && len(got[i]) == 0 {
						done = false
					}
				}
				mu.Unlock()
				if done || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			// Closing the others now would report them to each other.
			mu.Lock()
			snap := make([][]event, tc.n)
			for i := range got {
				snap[i] = append([]event(nil), got[i]...)
			}
			mu.Unlock()
			for i, evs := range snap {
				if i == tc.victim {
					if len(evs) != 0 {
						t.Errorf("closed worker %d reported %v", i, evs)
					}
					continue
				}
				if len(evs) != 1 || evs[0].peer != tc.victim || !errors.Is(evs[0].err, ErrPeerLost) {
					t.Errorf("worker %d reported %v, want one ErrPeerLost for worker %d", i, evs, tc.victim)
				}
			}
		})
	}
}
