package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/client"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// serverBenchOptions are the flags of `moemesh bench --server`: a serving
// benchmark of a running cluster through the Go SDK, reported as vLLM's
// serving benchmark reports (benchmarks/benchmark_serving.py, `vllm bench
// serve`).
type serverBenchOptions struct {
	Server      string
	Concurrency int
	Requests    int
	PromptLen   int
	MaxTokens   int
	PromptVocab int
	Seed        uint64
	Temperature float64
	APIKey      string
	TLSCA       string
	TLS         bool
	ResultFile  string
	Timeout     time.Duration

	addrs []string
	// dialOpts are extra SDK options (tests shrink the retry policy).
	dialOpts []client.Option
}

func (o *serverBenchOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Server, "server", "", "benchmark a running cluster through its gRPC API at these coordinator addresses (comma-separated) instead of the raw engine")
	f.IntVar(&o.Concurrency, "concurrency", 1, "with --server: requests in flight at once")
	f.IntVar(&o.Requests, "requests", 64, "with --server: number of requests")
	f.IntVar(&o.PromptLen, "prompt-len", 128, "with --server: prompt tokens per request (random ids)")
	f.IntVar(&o.MaxTokens, "max-tokens", 32, "with --server: generated tokens per request (end-of-sequence ignored)")
	f.IntVar(&o.PromptVocab, "prompt-vocab", 151643, "with --server: prompt ids are drawn from [0, N) (Qwen3's ordinary tokens)")
	f.Uint64Var(&o.Seed, "seed", 0, "with --server: seed of the prompts and, with --temperature, of request i's sampling (seed+i)")
	f.Float64Var(&o.Temperature, "temperature", 0, "with --server: sampling temperature; 0 is greedy")
	f.StringVar(&o.APIKey, "api-key", "", "with --server: API key sent as a bearer token")
	f.StringVar(&o.TLSCA, "tls-ca", "", "with --server: use TLS, trusting the PEM CA certificates in this file")
	f.BoolVar(&o.TLS, "tls", false, "with --server: use TLS with the system's root CAs (default: plaintext, as moemesh local serves)")
	f.StringVar(&o.ResultFile, "result-file", "", "with --server: also write the results as JSON to this file")
	f.DurationVar(&o.Timeout, "request-timeout", 10*time.Minute, "with --server: deadline of each request")
}

func (o *serverBenchOptions) Complete() error {
	for _, a := range strings.Split(o.Server, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.addrs = append(o.addrs, a)
		}
	}
	return nil
}

func (o *serverBenchOptions) Validate() error {
	var errs []error
	if len(o.addrs) == 0 {
		errs = append(errs, usagef("--server: no address in %q", o.Server))
	}
	if o.Concurrency < 1 {
		errs = append(errs, usagef("--concurrency %d must be at least 1", o.Concurrency))
	}
	if o.Requests < 1 {
		errs = append(errs, usagef("--requests %d must be at least 1", o.Requests))
	}
	if o.PromptLen < 1 || o.PromptLen > 1<<20 {
		errs = append(errs, usagef("--prompt-len %d must be in [1, 1048576]", o.PromptLen))
	}
	if o.MaxTokens < 1 || o.MaxTokens > 1<<20 {
		errs = append(errs, usagef("--max-tokens %d must be in [1, 1048576]", o.MaxTokens))
	}
	if o.PromptVocab < 1 || o.PromptVocab > math.MaxInt32 {
		errs = append(errs, usagef("--prompt-vocab %d must be a positive int32", o.PromptVocab))
	}
	if o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) {
		errs = append(errs, usagef("--temperature %v must be finite and not negative", o.Temperature))
	}
	if o.Timeout <= 0 {
		errs = append(errs, usagef("--request-timeout %v must be positive", o.Timeout))
	}
	if len(errs) > 0 {
		return &usageError{errors.Join(errs...)}
	}
	return nil
}

// requestOutput is one request's measurements (vLLM's RequestFuncOutput),
// times in seconds.
type requestOutput struct {
	Success   bool
	PromptLen int
	// OutputLen counts the token ids received.
	OutputLen int
	Text      string
	Latency   float64
	TTFT      float64
	// ITL holds the gap before each response after the first with tokens.
	ITL   []float64
	Error string
}

// benchResult is the JSON of the run; its keys are those of vLLM's result
// file.
type benchResult struct {
	Duration             float64     `json:"duration"`
	Completed            int         `json:"completed"`
	Failed               int         `json:"failed"`
	MaxConcurrency       int         `json:"max_concurrency"`
	TotalInputTokens     int         `json:"total_input_tokens"`
	TotalOutputTokens    int         `json:"total_output_tokens"`
	RequestThroughput    float64     `json:"request_throughput"`
	OutputThroughput     float64     `json:"output_throughput"`
	TotalTokenThroughput float64     `json:"total_token_throughput"`
	MeanTTFTMs           float64     `json:"mean_ttft_ms"`
	MedianTTFTMs         float64     `json:"median_ttft_ms"`
	StdTTFTMs            float64     `json:"std_ttft_ms"`
	P99TTFTMs            float64     `json:"p99_ttft_ms"`
	MeanTPOTMs           float64     `json:"mean_tpot_ms"`
	MedianTPOTMs         float64     `json:"median_tpot_ms"`
	StdTPOTMs            float64     `json:"std_tpot_ms"`
	P99TPOTMs            float64     `json:"p99_tpot_ms"`
	MeanITLMs            float64     `json:"mean_itl_ms"`
	MedianITLMs          float64     `json:"median_itl_ms"`
	StdITLMs             float64     `json:"std_itl_ms"`
	P99ITLMs             float64     `json:"p99_itl_ms"`
	InputLens            []int       `json:"input_lens"`
	OutputLens           []int       `json:"output_lens"`
	TTFTs                []float64   `json:"ttfts"`
	ITLs                 [][]float64 `json:"itls"`
	GeneratedTexts       []string    `json:"generated_texts"`
	Errors               []string    `json:"errors"`
}

// computeMetrics derives the report from the requests' measurements as
// vLLM's calculate_metrics does: failed requests count only as failed;
// TPOT is (latency − TTFT) / (output tokens − 1) for requests of more than
// one token; ITL pools every gap of every request.
func computeMetrics(outs []requestOutput, dur float64, concurrency int) *benchResult {
	r := &benchResult{Duration: dur, MaxConcurrency: concurrency,
		InputLens: []int{}, OutputLens: []int{}, TTFTs: []float64{}, ITLs: [][]float64{}, GeneratedTexts: []string{}, Errors: []string{}}
	var ttfts, tpots, itls []float64
	for _, o := range outs {
		r.InputLens = append(r.InputLens, o.PromptLen)
		r.TTFTs = append(r.TTFTs, o.TTFT)
		r.ITLs = append(r.ITLs, append([]float64{}, o.ITL...))
		r.GeneratedTexts = append(r.GeneratedTexts, o.Text)
		r.Errors = append(r.Errors, o.Error)
		if !o.Success {
			r.Failed++
			r.OutputLens = append(r.OutputLens, 0)
			continue
		}
		r.Completed++
		r.TotalInputTokens += o.PromptLen
		r.TotalOutputTokens += o.OutputLen
		r.OutputLens = append(r.OutputLens, o.OutputLen)
		ttfts = append(ttfts, o.TTFT)
		if o.OutputLen > 1 {
			tpots = append(tpots, (o.Latency-o.TTFT)/float64(o.OutputLen-1))
		}
		itls = append(itls, o.ITL...)
	}
	if dur > 0 {
		r.RequestThroughput = float64(r.Completed) / dur
		r.OutputThroughput = float64(r.TotalOutputTokens) / dur
		r.TotalTokenThroughput = float64(r.TotalInputTokens+r.TotalOutputTokens) / dur
	}
	ms := func(xs []float64) (mean, median, std, p99 float64) {
		return 1000 * meanOf(xs), 1000 * percentile(xs, 50), 1000 * stdOf(xs), 1000 * percentile(xs, 99)
	}
	r.MeanTTFTMs, r.MedianTTFTMs, r.StdTTFTMs, r.P99TTFTMs = ms(ttfts)
	r.MeanTPOTMs, r.MedianTPOTMs, r.StdTPOTMs, r.P99TPOTMs = ms(tpots)
	r.MeanITLMs, r.MedianITLMs, r.StdITLMs, r.P99ITLMs = ms(itls)
	return r
}

// meanOf is the mean, 0 for none (numpy's mean of vLLM's `xs or 0`).
func meanOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// stdOf is the population standard deviation (numpy's default).
func stdOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	m := meanOf(xs)
	var s float64
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)))
}

// percentile is numpy's default (linear) percentile: p in [0, 100].
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (rank-float64(lo))*(s[hi]-s[lo])
}

// center centres s in width n with fill c, as Python's "{:c^n}" does (the
// odd fill goes to the right).
func center(s string, c byte, n int) string {
	pad := n - len(s)
	if pad <= 0 {
		return s
	}
	l := pad / 2
	return strings.Repeat(string(c), l) + s + strings.Repeat(string(c), pad-l)
}

// writeServingReport prints r in the lines and sections of vLLM's serving
// benchmark ("{:<40} {:<10}" rows, 50-column banners).
func writeServingReport(w io.Writer, r *benchResult) error {
	var b strings.Builder
	row := func(label string, v any) {
		switch v := v.(type) {
		case int:
			fmt.Fprintf(&b, "%-40s %-10d\n", label, v)
		case float64:
			fmt.Fprintf(&b, "%-40s %-10.2f\n", label, v)
		}
	}
	b.WriteString(center(" Serving Benchmark Result ", '=', 50) + "\n")
	row("Successful requests:", r.Completed)
	row("Failed requests:", r.Failed)
	row("Maximum request concurrency:", r.MaxConcurrency)
	row("Benchmark duration (s):", r.Duration)
	row("Total input tokens:", r.TotalInputTokens)
	row("Total generated tokens:", r.TotalOutputTokens)
	row("Request throughput (req/s):", r.RequestThroughput)
	row("Output token throughput (tok/s):", r.OutputThroughput)
	row("Total Token throughput (tok/s):", r.TotalTokenThroughput)
	section := func(header, name string, mean, median, p99 float64) {
		b.WriteString(center(header, '-', 50) + "\n")
		row("Mean "+name+" (ms):", mean)
		row("Median "+name+" (ms):", median)
		row("P99 "+name+" (ms):", p99)
	}
	section("Time to First Token", "TTFT", r.MeanTTFTMs, r.MedianTTFTMs, r.P99TTFTMs)
	section("Time per Output Token (excl. 1st token)", "TPOT", r.MeanTPOTMs, r.MedianTPOTMs, r.P99TPOTMs)
	section("Inter-token Latency", "ITL", r.MeanITLMs, r.MedianITLMs, r.P99ITLMs)
	b.WriteString(strings.Repeat("=", 50) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// benchRequest builds request i: prompt ids from rng, exactly max tokens.
func (o *serverBenchOptions) benchRequest(i int, rng *rand.Rand) *infpb.GenerateRequest {
	prompt := make([]int32, o.PromptLen)
	for j := range prompt {
		prompt[j] = int32(rng.IntN(o.PromptVocab))
	}
	t := float32(o.Temperature)
	seed := o.Seed + uint64(i)
	return &infpb.GenerateRequest{PromptTokenIds: prompt, MaxTokens: uint32(o.MaxTokens), IgnoreEos: true,
		Sampling: &infpb.SamplingParams{Temperature: &t, Seed: &seed}}
}

// measure runs one streaming request and times its responses.
func (o *serverBenchOptions) measure(ctx context.Context, c *client.Client, req *infpb.GenerateRequest) requestOutput {
	out := requestOutput{PromptLen: len(req.PromptTokenIds)}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	st, err := c.Generate(ctx, req)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer st.Close()
	var text strings.Builder
	var last time.Time
	for {
		m, err := st.Recv()
		now := time.Now()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			out.Error = err.Error()
			return out
		}
		if len(m.TokenIds) == 0 && m.Text == "" {
			continue
		}
		if out.OutputLen == 0 {
			out.TTFT = now.Sub(start).Seconds()
		} else {
			out.ITL = append(out.ITL, now.Sub(last).Seconds())
		}
		last = now
		out.OutputLen += len(m.TokenIds)
		text.WriteString(m.Text)
	}
	out.Latency = time.Since(start).Seconds()
	out.Text = text.String()
	out.Success = true
	return out
}

func (o *serverBenchOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	opts := []client.Option{}
	switch {
	case o.TLSCA != "":
		opts = append(opts, client.WithCAFile(o.TLSCA))
	case o.TLS:
	default:
		opts = append(opts, client.WithInsecure())
	}
	if o.APIKey != "" {
		opts = append(opts, client.WithAPIKey(o.APIKey))
	}
	c, err := client.Dial(o.addrs, append(opts, o.dialOpts...)...)
	if err != nil {
		return usagef("--server: %v", err)
	}
	defer c.Close()

	rng := rand.New(rand.NewPCG(o.Seed, 0x6d6f656d657368))
	reqs := make([]*infpb.GenerateRequest, o.Requests)
	for i := range reqs {
		reqs[i] = o.benchRequest(i, rng)
	}
	// As vLLM does: one request first, so a misconfiguration fails at once
	// and the connection is up before the clock starts.
	fmt.Fprintln(s.ErrOut, "Starting initial single prompt test run...")
	if t := o.measure(ctx, c, reqs[0]); !t.Success {
		return fmt.Errorf("initial test run failed (check the flags and the server): %s", t.Error)
	}
	fmt.Fprintln(s.ErrOut, "Initial test run completed. Starting main benchmark run...")

	var bar *progressbar.ProgressBar
	if s.ErrIsTerminal {
		bar = progressbar.NewOptions(o.Requests, progressbar.OptionSetWriter(s.ErrOut),
			progressbar.OptionSetDescription("requests"), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	}
	outs := make([]requestOutput, o.Requests)
	next := make(chan int)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range min(o.Concurrency, o.Requests) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				outs[i] = o.measure(ctx, c, reqs[i])
				if bar != nil {
					_ = bar.Add(1)
				}
			}
		}()
	}
feed:
	for i := range reqs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	dur := time.Since(t0).Seconds()
	if bar != nil {
		_ = bar.Finish()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := computeMetrics(outs, dur, o.Concurrency)
	if err := writeServingReport(s.Out, r); err != nil {
		return err
	}
	if o.ResultFile != "" {
		data, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.ResultFile, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("--result-file: %w", err)
		}
	}
	if r.Completed == 0 {
		return fmt.Errorf("every request failed; the first error: %s", r.Errors[0])
	}
	return nil
}
