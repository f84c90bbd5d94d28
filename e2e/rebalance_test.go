package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// ctl runs moemeshctl against l with the admin token and returns stdout
// and the exit code.
func ctl(t *testing.T, l *local, args ...string) (string, int) {
	t.Helper()
	tok := ""
	for _, line := range strings.Split(l.log(), "\n") {
		if f, ok := strings.CutPrefix(line, "admin-token-file: "); ok {
			tok = strings.TrimSpace(f)
		}
	}
	if tok == "" {
		t.Fatalf("moemesh local printed no admin token file:\n%s", l.log())
	}
	cmd := exec.Command(ctlBinary, append([]string{"--endpoints", l.grpc, "--token-file", tok}, args...)...)
	cmd.Env = os.Environ()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("moemeshctl %v: %v", args, err)
	}
	if code != 0 {
		t.Logf("moemeshctl %v exited %d: %s", args, code, stderr.String())
	}
	return string(out), code
}

// skewed are prompts that repeat a few tokens, so a few experts take
// most of the routing.
var skewed = []string{
	strings.Repeat("expert ", 24),
	strings.Repeat("route route token ", 8),
	strings.Repeat("mixture of experts mixture ", 6),
	strings.Repeat("0 1 0 1 ", 8),
}

func skewedRequest(i int) *pb.GenerateRequest {
	return &pb.GenerateRequest{Prompt: skewed[i%len(skewed)], MaxTokens: 48, IgnoreEos: true, Sampling: greedy()}
}

// load streams the skewed prompts from the SDK, conc at a time, until
// stop is closed; it records every inter-token gap with its time, every
// failure, and every output that differs from want.
type load struct {
	mu       sync.Mutex
	gaps     []gap
	failures []error
	outputs  map[int][][]int32
}

type gap struct {
	at time.Time
	d  time.Duration
}

func runLoad(t *testing.T, l *local, conc int, stop <-chan struct{}) (*load, *sync.WaitGroup) {
	sdk := dial(t, l.grpc)
	ld := &load{outputs: map[int][][]int32{}}
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (w + n) % len(skewed)
				st, err := sdk.Generate(ctxFor(t, 2*time.Minute), skewedRequest(i))
				var ids []int32
				last := time.Now()
				for err == nil {
					var m *pb.GenerateResponse
					m, err = st.Recv()
					if err != nil {
						break
					}
					now := time.Now()
					if len(ids) > 0 && len(m.TokenIds) > 0 {
						ld.mu.Lock()
						ld.gaps = append(ld.gaps, gap{now, now.Sub(last) / time.Duration(len(m.TokenIds))})
						ld.mu.Unlock()
					}
					last = now
					ids = append(ids, m.TokenIds...)
				}
				ld.mu.Lock()
				if !errors.Is(err, io.EOF) {
					ld.failures = append(ld.failures, fmt.Errorf("prompt %d after %d tokens: %w", i, len(ids), err))
				} else {
					ld.outputs[i] = append(ld.outputs[i], ids)
				}
				ld.mu.Unlock()
			}
		}()
	}
	return ld, &wg
}

// p99 is the 99th percentile of the gaps inside [from, to).
func (ld *load) p99(from, to time.Time) (time.Duration, int) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var ds []time.Duration
	for _, g := range ld.gaps {
		if !g.at.Before(from) && g.at.Before(to) {
			ds = append(ds, g.d)
		}
	}
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*99/100)], len(ds)
}

// TestLiveRebalanceUnderLoad: `moemeshctl rebalance --apply --yes` on a
// `moemesh local --workers 4` cluster under continuous load from the SDK
// with prompts that skew routing: no request fails, every greedy output
// equals the one before the rebalance, the measured imbalance drops, and
// the p99 inter-token latency during the apply is logged beside the p99
// without one (docs/benchmarks.md records them).
func TestLiveRebalanceUnderLoad(t *testing.T) {
	l := startLocal(t, "--workers", "4", "--expert-spare-slots", "2", "--expert-stats-interval", "200ms", "--expert-stats-window", "10m")
	// The outputs of an undisturbed cluster.
	sdk := dial(t, l.grpc)
	want := map[int][]int32{}
	for i := range skewed {
		r, err := sdk.Generate(ctxFor(t, time.Minute), skewedRequest(i))
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.Collect()
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.TokenIDs
	}

	stop := make(chan struct{})
	ld, wg := runLoad(t, l, 4, stop)
	quietFrom := time.Now()
	// Statistics of the load, and a quiet stretch to compare with.
	var before struct {
		WindowTokens uint64  `json:"window_tokens"`
		Imbalance    float64 `json:"imbalance"`
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		out, code := ctl(t, l, "experts", "stats", "-o", "json")
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &before); err != nil {
				t.Fatalf("experts stats -o json: %v\n%s", err, out)
			}
			if before.WindowTokens > 500 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if before.WindowTokens == 0 {
		t.Fatal("no routing statistics within a minute of load")
	}
	quietTo := time.Now()

	applyFrom := time.Now()
	out, code := ctl(t, l, "rebalance", "--apply", "--yes", "-o", "json")
	applyTo := time.Now()
	if code != 0 {
		t.Fatalf("rebalance --apply exited %d:\n%s", code, out)
	}
	var applied struct {
		Plan struct {
			FromEpoch uint64            `json:"from_epoch"`
			Moves     []json.RawMessage `json:"moves"`
			Before    float64           `json:"imbalance_before"`
			After     float64           `json:"imbalance_after"`
		} `json:"plan"`
	}
	if err := json.Unmarshal([]byte(out), &applied); err != nil {
		t.Fatalf("rebalance --apply -o json: %v\n%s", err, out)
	}
	// Keep the load on a while after the apply.
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	ld.mu.Lock()
	failures := ld.failures
	outputs := ld.outputs
	ld.mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d requests failed during the rebalance; first: %v", len(failures), failures[0])
	}
	compared := 0
	for i, outs := range outputs {
		for _, got := range outs {
			compared++
			if diff := cmp.Diff(want[i], got); diff != "" {
				t.Errorf("prompt %d: greedy output under a rebalance differs (-want +got):\n%s", i, diff)
			}
		}
	}
	if compared == 0 {
		t.Fatal("no request finished under load")
	}

	var after struct {
		Imbalance float64 `json:"imbalance"`
	}
	out, code = ctl(t, l, "experts", "stats", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &after) != nil {
		t.Fatalf("experts stats after: exit %d\n%s", code, out)
	}
	if len(applied.Plan.Moves) == 0 || after.Imbalance >= before.Imbalance {
		t.Errorf("measured imbalance %.3f → %.3f after %d moves (predicted %.3f → %.3f); want a drop",
			before.Imbalance, after.Imbalance, len(applied.Plan.Moves), applied.Plan.Before, applied.Plan.After)
	}
	quiet, nq := ld.p99(quietFrom, quietTo)
	during, nd := ld.p99(applyFrom, applyTo)
	t.Logf("measured imbalance %.3f → %.3f (predicted %.3f → %.3f, %d moves); %d requests compared equal",
		before.Imbalance, after.Imbalance, applied.Plan.Before, applied.Plan.After, len(applied.Plan.Moves), compared)
	t.Logf("p99 inter-token latency: %v without a rebalance (%d gaps), %v during the apply (%d gaps, %v); ratio %.2f",
		quiet, nq, during, nd, applyTo.Sub(applyFrom).Round(time.Millisecond), float64(during)/float64(max(quiet, 1)))
}
