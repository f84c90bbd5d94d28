package main

import (
	"bytes"
	"encoding/json"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// TestServingReportGolden prints a fixed result; testdata/bench_serving.golden
// was printed by Python with the format strings of vLLM's serving
// benchmark, so the two reports line up character for character.
func TestServingReportGolden(t *testing.T) {
	const dur = 12.3456
	r := &benchResult{Duration: dur, Completed: 15, Failed: 1, MaxConcurrency: 4, TotalInputTokens: 1920, TotalOutputTokens: 480,
		RequestThroughput: 15 / dur, OutputThroughput: 480 / dur, TotalTokenThroughput: 2400 / dur,
		MeanTTFTMs: 123.456, MedianTTFTMs: 120.5, P99TTFTMs: 250.125,
		MeanTPOTMs: 20.004, MedianTPOTMs: 19.995, P99TPOTMs: 31.5,
		MeanITLMs: 19.9, MedianITLMs: 18.25, P99ITLMs: 1042}
	var b bytes.Buffer
	if err := writeServingReport(&b, r); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "bench_serving.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), b.String()); d != "" {
		t.Errorf("report (-want +got):\n%s", d)
	}
}

func TestCenter(t *testing.T) {
	// Python: "{s:{c}^{n}}".format(s=..., n=50, c="-").
	for s, want := range map[string]string{
		"Time to First Token":                     "---------------Time to First Token----------------",
		"Time per Output Token (excl. 1st token)": "-----Time per Output Token (excl. 1st token)------",
		"Inter-token Latency":                     "---------------Inter-token Latency----------------",
	} {
		if got := center(s, '-', 50); got != want {
			t.Errorf("center(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	// numpy.percentile's default (linear) method, worked by hand.
	for _, tc := range []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{nil, 99, 0},
		{[]float64{5}, 99, 5},
		{[]float64{4, 1, 3, 2}, 50, 2.5},
		{[]float64{4, 1, 3, 2}, 99, 3.97},
		{[]float64{1, 2, 3, 4, 5}, 50, 3},
		{[]float64{10, 20}, 0, 10},
		{[]float64{10, 20}, 100, 20},
	} {
		if got := percentile(tc.xs, tc.p); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.xs, tc.p, got, tc.want)
		}
	}
	if got := stdOf([]float64{1, 3}); got != 1 {
		t.Errorf("stdOf([1 3]) = %v, want 1 (population)", got)
	}
}

func TestComputeMetrics(t *testing.T) {
	outs := []requestOutput{
		{Success: true, PromptLen: 10, OutputLen: 3, Text: "abc", Latency: 0.5, TTFT: 0.1, ITL: []float64{0.2, 0.2}},
		{Success: true, PromptLen: 10, OutputLen: 5, Text: "abcde", Latency: 1.3, TTFT: 0.3, ITL: []float64{0.25, 0.25, 0.25, 0.25}},
		{Success: true, PromptLen: 10, OutputLen: 1, Text: "a", Latency: 0.2, TTFT: 0.2},
		{PromptLen: 10, Error: "boom"},
	}
	r := computeMetrics(outs, 2, 3)
	want := &benchResult{Duration: 2, Completed: 3, Failed: 1, MaxConcurrency: 3, TotalInputTokens: 30, TotalOutputTokens: 9,
		RequestThroughput: 1.5, OutputThroughput: 4.5, TotalTokenThroughput: 19.5,
		// TTFT over the successful requests: 0.1, 0.3, 0.2.
		MeanTTFTMs: 200, MedianTTFTMs: 200, StdTTFTMs: 1000 * math.Sqrt(0.02/3), P99TTFTMs: 1000 * (0.2 + 0.98*0.1),
		// TPOT: (0.5-0.1)/2 = 0.2 and (1.3-0.3)/4 = 0.25; a one-token request has none.
		MeanTPOTMs: 225, MedianTPOTMs: 225, StdTPOTMs: 25, P99TPOTMs: 1000 * (0.2 + 0.99*0.05),
		// ITL pools 0.2, 0.2, 0.25 ×4.
		MeanITLMs: 1000 * 1.4 / 6, MedianITLMs: 250, StdITLMs: 1000 * math.Sqrt((2*math.Pow(0.2-1.4/6, 2)+4*math.Pow(0.25-1.4/6, 2))/6), P99ITLMs: 250,
		InputLens: []int{10, 10, 10, 10}, OutputLens: []int{3, 5, 1, 0}, TTFTs: []float64{0.1, 0.3, 0.2, 0},
		ITLs: [][]float64{{0.2, 0.2}, {0.25, 0.25, 0.25, 0.25}, {}, {}}, GeneratedTexts: []string{"abc", "abcde", "a", ""}, Errors: []string{"", "", "", "boom"}}
	if d := cmp.Diff(want, r, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a)) })); d != "" {
		t.Errorf("metrics (-want +got):\n%s", d)
	}
}

// benchFake streams max_tokens tokens one per response and records what
// the bench sent.
type benchFake struct {
	infpb.UnimplementedInferenceServiceServer
	code     codes.Code // when set, every request fails with it
	inFlight atomic.Int32
	peak     atomic.Int32
	mu       sync.Mutex
	reqs     []*infpb.GenerateRequest
}

func (f *benchFake) Generate(req *infpb.GenerateRequest, srv grpc.ServerStreamingServer[infpb.GenerateResponse]) error {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.code != codes.OK {
		return status.Error(f.code, "fake: configured failure")
	}
	for i := range req.MaxTokens {
		m := &infpb.GenerateResponse{TokenIds: []int32{int32(i)}, Text: "x"}
		if i == req.MaxTokens-1 {
			m.FinishReason = "length"
			m.Usage = &infpb.Usage{PromptTokens: uint32(len(req.PromptTokenIds)), CompletionTokens: req.MaxTokens}
		}
		if err := srv.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func serveBenchFake(t *testing.T, f *benchFake) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	infpb.RegisterInferenceServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func TestBenchServer(t *testing.T) {
	f := &benchFake{}
	addr := serveBenchFake(t, f)
	result := filepath.Join(t.TempDir(), "result.json")
	code, out, errOut := runCLI(t, "", "bench", "--server", addr, "--concurrency", "3", "--requests", "7",
		"--prompt-len", "5", "--max-tokens", "4", "--prompt-vocab", "50", "--seed", "9", "--result-file", result)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, line := range []string{
		"============ Serving Benchmark Result ============",
		"Successful requests:                     7         ",
		"Failed requests:                         0         ",
		"Maximum request concurrency:             3         ",
		"Total input tokens:                      35        ",
		"Total generated tokens:                  28        ",
		"---------------Time to First Token----------------",
		"-----Time per Output Token (excl. 1st token)------",
		"---------------Inter-token Latency----------------",
		"==================================================",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("report lacks the line %q:\n%s", line, out)
		}
	}
	for _, label := range []string{"Benchmark duration (s):", "Request throughput (req/s):", "Output token throughput (tok/s):",
		"Total Token throughput (tok/s):", "Mean TTFT (ms):", "Median TTFT (ms):", "P99 TTFT (ms):", "Mean TPOT (ms):",
		"Median TPOT (ms):", "P99 TPOT (ms):", "Mean ITL (ms):", "Median ITL (ms):", "P99 ITL (ms):"} {
		if !strings.Contains(out, "\n"+label) {
			t.Errorf("report lacks %q", label)
		}
	}
	if strings.Contains(errOut, "requests") && strings.Contains(errOut, "%") {
		t.Errorf("a progress bar was drawn on a non-terminal: %q", errOut)
	}

	data, err := os.ReadFile(result)
	if err != nil {
		t.Fatal(err)
	}
	var r benchResult
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Completed != 7 || r.TotalInputTokens != 35 || r.TotalOutputTokens != 28 || len(r.ITLs) != 7 || r.Duration <= 0 {
		t.Errorf("result file: %+v", r)
	}
	for i, itl := range r.ITLs {
		if len(itl) != 3 {
			t.Errorf("request %d: %d inter-token gaps, want 3", i, len(itl))
		}
	}
	if r.MeanTTFTMs <= 0 || r.MeanTPOTMs < 0 {
		t.Errorf("latencies: TTFT %v TPOT %v", r.MeanTTFTMs, r.MeanTPOTMs)
	}

	// 1 test request + 7 measured, each as the flags say, ≤ 3 at once.
	f.mu.Lock()
	reqs := f.reqs
	f.mu.Unlock()
	if len(reqs) != 8 {
		t.Fatalf("server got %d requests, want 8", len(reqs))
	}
	for i, q := range reqs {
		if len(q.PromptTokenIds) != 5 || q.MaxTokens != 4 || !q.IgnoreEos || q.GetSampling().GetTemperature() != 0 {
			t.Errorf("request %d: %v", i, q)
		}
		for _, id := range q.PromptTokenIds {
			if id < 0 || id >= 50 {
				t.Errorf("request %d: prompt id %d outside --prompt-vocab 50", i, id)
			}
		}
	}
	if p := f.peak.Load(); p > 3 {
		t.Errorf("%d requests in flight at once, want at most --concurrency 3", p)
	}
}

func TestBenchServerFailures(t *testing.T) {
	f := &benchFake{code: codes.InvalidArgument}
	addr := serveBenchFake(t, f)
	code, _, errOut := runCLI(t, "", "bench", "--server", addr, "--requests", "2", "--max-tokens", "2")
	if code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(errOut, "initial test run failed") || !strings.Contains(errOut, "InvalidArgument") {
		t.Errorf("stderr %q does not name the failure", errOut)
	}
	if len(f.reqs) != 1 {
		t.Errorf("server got %d requests, want 1 (the test run, not retried)", len(f.reqs))
	}
}

func TestBenchServerBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--server", ""},
		{"--server", "a:1", "--concurrency", "0"},
		{"--server", "a:1", "--requests", "0"},
		{"--server", "a:1", "--prompt-len", "0"},
		{"--server", "a:1", "--max-tokens", "-1"},
		{"--server", "a:1", "--temperature", "-1"},
		{"--server", "a:1", "--prompt-vocab", "0"},
		{"--server", "a:1", "--model", "dir"},
	} {
		code, _, errOut := runCLI(t, "", append([]string{"bench"}, args...)...)
		if code != ExitUsage {
			t.Errorf("bench %v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
	}
}
