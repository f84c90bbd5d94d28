package sharding

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewLayout(t *testing.T) {
	tests := []struct {
		name        string
		workers, tp int
		want        Layout
		wantErr     error
	}{
		{"single", 1, 1, Layout{1, 1, 1}, nil},
		{"dp only", 6, 1, Layout{6, 6, 1}, nil},
		{"tp only", 8, 8, Layout{8, 1, 8}, nil},
		{"16 = 2x8", 16, 8, Layout{16, 2, 8}, nil},
		{"64 = 4x16", 64, 16, Layout{64, 4, 16}, nil},
		{"tp does not divide", 6, 4, Layout{}, ErrIndivisible},
		{"tp larger", 4, 8, Layout{}, ErrIndivisible},
		{"zero workers", 0, 1, Layout{}, ErrInvalid},
		{"zero tp", 4, 0, Layout{}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLayout(tc.workers, tc.tp)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("NewLayout(%d, %d) error = %v, want %v", tc.workers, tc.tp, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("NewLayout(%d, %d) (-want +got):\n%s", tc.workers, tc.tp, diff)
			}
			if err != nil {
				return
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
			for w := range got.Workers {
				g, r := got.Group(w), got.Rank(w)
				if g != w/tc.tp || r != w%tc.tp || got.Worker(g, r) != w {
					t.Errorf("worker %d: group %d rank %d, back to %d", w, g, r, got.Worker(g, r))
				}
				if got.GroupWorkers(g)[r] != w {
					t.Errorf("GroupWorkers(%d)[%d] = %d, want %d", g, r, got.GroupWorkers(g)[r], w)
				}
			}
		})
	}
}

func TestLayoutValidate(t *testing.T) {
	for _, l := range []Layout{{}, {4, 2, 1}, {4, -2, -2}, {8, 2, 2}} {
		if err := l.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v.Validate() = %v, want ErrInvalid", l, err)
		}
	}
}

func TestSplitRange(t *testing.T) {
	tests := []struct {
		n, parts int
		want     [][2]int
	}{
		{8, 1, [][2]int{{0, 8}}},
		{8, 4, [][2]int{{0, 2}, {2, 4}, {4, 6}, {6, 8}}},
		{10, 4, [][2]int{{0, 3}, {3, 6}, {6, 9}, {9, 10}}},
		{5, 4, [][2]int{{0, 2}, {2, 4}, {4, 5}, {5, 5}}},
		{151936, 8, [][2]int{
			{0, 18992}, {18992, 37984}, {37984, 56976}, {56976, 75968},
			{75968, 94960}, {94960, 113952}, {113952, 132944}, {132944, 151936},
		}},
	}
	for _, tc := range tests {
		var got [][2]int
		for i := range tc.parts {
			got = append(got, SplitRange(tc.n, tc.parts, i))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("SplitRange(%d, %d, ·) (-want +got):\n%s", tc.n, tc.parts, diff)
		}
	}
}
