package serving

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/moemesh/moemesh/scheduler"
)

// Metrics are the Prometheus metrics of one server, named as vLLM's with
// the prefix "moemesh:" so dashboards port by a prefix, and labeled with
// model_name as vLLM does. It implements scheduler.Observer: hand it to
// the scheduler so steps are counted. docs/serving.md lists them.
type Metrics struct {
	reg   *prometheus.Registry
	model atomic.Value // string

	running, waiting, kvUsage            *prometheus.GaugeVec
	promptTokens, genTokens, preemptions *prometheus.CounterVec
	success                              *prometheus.CounterVec
	ttft, itl, tpot, e2e, queue          *prometheus.HistogramVec
	reqPrompt, reqGen, reqMaxTokens      *prometheus.HistogramVec
	stepTime, workerStep                 *prometheus.HistogramVec
	expertTokens                         *prometheus.CounterVec

	mu      sync.Mutex
	experts [][]prometheus.Counter // [layer][expert], grown on demand
	workers []prometheus.Observer
}

var _ scheduler.Observer = (*Metrics)(nil)

// Buckets as vLLM's.
var (
	ttftBuckets  = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	itlBuckets   = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	e2eBuckets   = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	tokenBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000}
	stepBuckets  = prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms to 16 s
)

// NewMetrics registers the metrics on reg (nil: a new private registry).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		// A private registry with the Go runtime's and the process's
		// collectors, as the default one has (go_goroutines and
		// process_resident_memory_bytes are what operators watch for
		// leaks).
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &Metrics{reg: reg}
	m.model.Store("")
	model := []string{"model_name"}
	gauge := func(name, help string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moemesh:" + name, Help: help}, model)
		reg.MustRegister(g)
		return g
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moemesh:" + name, Help: help}, append(model, labels...))
		reg.MustRegister(c)
		return c
	}
	hist := func(name, help string, b []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moemesh:" + name, Help: help, Buckets: b}, append(model, labels...))
		reg.MustRegister(h)
		return h
	}
	m.running = gauge("num_requests_running", "Number of requests in the running batch.")
	m.waiting = gauge("num_requests_waiting", "Number of requests waiting to run.")
	m.kvUsage = gauge("kv_cache_usage_perc", "KV-cache usage: the fraction of blocks in use, 1 = 100%.")
	m.promptTokens = counter("prompt_tokens_total", "Number of prefill tokens computed (recomputed ones after a preemption included).")
	m.genTokens = counter("generation_tokens_total", "Number of generated tokens computed.")
	m.preemptions = counter("num_preemptions_total", "Cumulative number of preemptions.")
	m.success = counter("request_success_total", "Count of finished requests by finish reason (abort: the client left or the request failed).", "finished_reason")
	m.ttft = hist("time_to_first_token_seconds", "Time from the request's arrival to its first token.", ttftBuckets)
	m.itl = hist("inter_token_latency_seconds", "Time between consecutive tokens of a request.", itlBuckets)
	m.tpot = hist("time_per_output_token_seconds", "Per request: (end-to-end time - time to first token) / (generated tokens - 1).", itlBuckets)
	m.e2e = hist("e2e_request_latency_seconds", "Time from the request's arrival to its end.", e2eBuckets)
	m.queue = hist("request_queue_time_seconds", "Time a request waited before it first ran.", e2eBuckets)
	m.reqPrompt = hist("request_prompt_tokens", "Number of prompt tokens per request.", tokenBuckets)
	m.reqGen = hist("request_generation_tokens", "Number of generated tokens per request.", tokenBuckets)
	m.reqMaxTokens = hist("request_params_max_tokens", "The max_tokens of each request (after defaulting to the context).", tokenBuckets)
	m.stepTime = hist("step_duration_seconds", "Wall time of one scheduler step.", stepBuckets)
	m.workerStep = hist("worker_step_duration_seconds", "Wall time of one step on each worker.", stepBuckets, "worker")
	m.expertTokens = counter("expert_routed_tokens_total", "Tokens routed to each expert of each MoE layer.", "layer", "expert")
	return m
}

// Registry is the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) name() string { return m.model.Load().(string) }

// setModel names the served model in the labels from now on.
func (m *Metrics) setModel(name string) {
	if m.name() != name {
		m.model.Store(name)
		m.mu.Lock()
		m.experts, m.workers = nil, nil
		m.mu.Unlock()
	}
}

// Step implements scheduler.Observer.
func (m *Metrics) Step(s scheduler.Stats) {
	n := m.name()
	m.running.WithLabelValues(n).Set(float64(s.Running))
	m.waiting.WithLabelValues(n).Set(float64(s.Waiting))
	m.kvUsage.WithLabelValues(n).Set(s.KVUsage)
	if s.Queues {
		return
	}
	m.promptTokens.WithLabelValues(n).Add(float64(s.PromptTokens))
	m.genTokens.WithLabelValues(n).Add(float64(s.GenerationTokens))
	m.preemptions.WithLabelValues(n).Add(float64(s.Preemptions))
	m.stepTime.WithLabelValues(n).Observe(s.Duration.Seconds())
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.workers) < len(s.WorkerTime) {
		m.workers = append(m.workers, m.workerStep.WithLabelValues(n, strconv.Itoa(len(m.workers))))
	}
	for i, d := range s.WorkerTime {
		m.workers[i].Observe(d.Seconds())
	}
	for l, row := range s.ExpertTokens {
		for len(m.experts) <= l {
			m.experts = append(m.experts, nil)
		}
		for len(m.experts[l]) < len(row) {
			m.experts[l] = append(m.experts[l], m.expertTokens.WithLabelValues(n, strconv.Itoa(l), strconv.Itoa(len(m.experts[l]))))
		}
		for e, c := range row {
			if c > 0 {
				m.experts[l][e].Add(float64(c))
			}
		}
	}
}

// Scheduled implements scheduler.Observer.
func (m *Metrics) Scheduled(queue time.Duration) {
	m.queue.WithLabelValues(m.name()).Observe(queue.Seconds())
}

func (m *Metrics) requestStarted(prompt, maxTokens int) {
	n := m.name()
	m.reqPrompt.WithLabelValues(n).Observe(float64(prompt))
	m.reqMaxTokens.WithLabelValues(n).Observe(float64(maxTokens))
}

func (m *Metrics) firstToken(d time.Duration) {
	m.ttft.WithLabelValues(m.name()).Observe(d.Seconds())
}

// interToken records a gap d after which n tokens arrived together: n
// gaps of d/n.
func (m *Metrics) interToken(d time.Duration, n int) {
	o := m.itl.WithLabelValues(m.name())
	for range n {
		o.Observe(d.Seconds() / float64(n))
	}
}

// requestEnded records a finished request ("" finish: aborted).
func (m *Metrics) requestEnded(finish string, e2e, ttft time.Duration, generated int) {
	n := m.name()
	if finish == "" {
		finish = "abort"
	}
	m.success.WithLabelValues(n, finish).Inc()
	m.e2e.WithLabelValues(n).Observe(e2e.Seconds())
	m.reqGen.WithLabelValues(n).Observe(float64(generated))
	if generated > 1 && ttft > 0 {
		m.tpot.WithLabelValues(n).Observe((e2e - ttft).Seconds() / float64(generated-1))
	}
}
