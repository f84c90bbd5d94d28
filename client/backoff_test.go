package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBackoffDelay(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2, Jitter: 0.5}
	for _, tc := range []struct {
		name  string
		round int
		u     float64
		want  time.Duration
	}{
		{"first, no jitter", 0, 0.5, 100 * time.Millisecond},
		{"second", 1, 0.5, 200 * time.Millisecond},
		{"third", 2, 0.5, 400 * time.Millisecond},
		{"capped", 10, 0.5, time.Second},
		{"lowest jitter", 1, 0, 100 * time.Millisecond},
		{"highest jitter", 1, 1, 300 * time.Millisecond},
		{"capped then jittered down", 10, 0, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoffDelay(p, tc.round, tc.u); got != tc.want {
				t.Errorf("backoffDelay(round %d, u %v) = %v, want %v", tc.round, tc.u, got, tc.want)
			}
		})
	}
}

// TestRetrierPacing checks when the retrier pauses: never while untried
// addresses remain in a round, then for the backoff (here longer than the
// context, so the pause ends with the context's error).
func TestRetrierPacing(t *testing.T) {
	c := &Client{addrs: []string{"a", "b", "c"}, opts: options{retry: RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour, Multiplier: 1}}}
	r := retrier{c: c}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	for i := range 2 {
		if err := r.wait(ctx, errTest{}); err != nil {
			t.Fatalf("failure %d: %v, want an immediate retry on the next address", i+1, err)
		}
	}
	if err := r.wait(ctx, errTest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("failure 3: %v, want the backoff to last until the deadline", err)
	}
	r.progress()
	if r.failures != 0 {
		t.Errorf("failures after progress %d, want 0", r.failures)
	}
}

type errTest struct{}

func (errTest) Error() string { return "test" }
