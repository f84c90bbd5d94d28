package agent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &window{span: 10 * time.Second, snaps: []snapshot{{at: t0}}}
	steps := []struct {
		at     time.Duration
		totals []uint64
		want   []uint64
		span   time.Duration
	}{
		{5 * time.Second, []uint64{5, 1}, []uint64{5, 1}, 5 * time.Second},     // young: since the start
		{10 * time.Second, []uint64{8, 1}, []uint64{8, 1}, 10 * time.Second},   // exactly one window
		{15 * time.Second, []uint64{20, 3}, []uint64{15, 2}, 10 * time.Second}, // base moved to t0+5s
		{26 * time.Second, []uint64{21, 3}, []uint64{1, 0}, 11 * time.Second},  // base at t0+15s: the newest at or before 16s
		{27 * time.Second, []uint64{2}, []uint64{2}, 12 * time.Second},         // another model: counted from zero
	}
	for _, s := range steps {
		got, span := w.add(t0.Add(s.at), s.totals)
		if diff := cmp.Diff(s.want, got); diff != "" || span != s.span {
			t.Errorf("at %v: counts (-want +got):\n%s span %v, want %v", s.at, diff, span, s.span)
		}
	}
	if len(w.snaps) > 4 {
		t.Errorf("the window keeps %d snapshots; old ones must go", len(w.snaps))
	}
}
