package sharding

import "testing"

func TestRouteIn(t *testing.T) {
	// Expert 0 on workers 0, 1, 3; expert 1 on 2; expert 2 on 1 and 2.
	p := NewPlacement(3, [][]int{{0}, {0, 2}, {1, 2}, {0}})
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		group  []int
		expert int
		key    uint64
		want   int
	}{
		{[]int{0, 1}, 0, 0, 0}, {[]int{0, 1}, 0, 1, 1}, {[]int{0, 1}, 0, 2, 0}, // owners 0, 1 in the group
		{[]int{2, 3}, 0, 0, 3}, {[]int{2, 3}, 0, 7, 3}, // only 3 in the group
		{[]int{2, 3}, 2, 4, 2},                   // expert 2 on worker 2
		{[]int{0, 1}, 1, 5, 2},                   // no owner in the group: Owner(1, 5)
		{[]int{3}, 2, 0, 1}, {[]int{3}, 2, 1, 2}, // group of one: Route
	}
	for _, tc := range tests {
		if got := p.RouteIn(tc.group, tc.expert, tc.key); got != tc.want {
			t.Errorf("RouteIn(%v, %d, %d) = %d, want %d", tc.group, tc.expert, tc.key, got, tc.want)
		}
	}
	// A group of one worker answers as Route does, for every key.
	for from := range p.Workers {
		for e := range p.Experts {
			for key := range uint64(6) {
				if got, want := p.RouteIn([]int{from}, e, key), p.Route(from, e, key); got != want {
					t.Errorf("RouteIn([%d], %d, %d) = %d, Route = %d", from, e, key, got, want)
				}
			}
		}
	}
}
