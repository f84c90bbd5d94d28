package serving

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// expertCollector exports the admin API's expert statistics (the window
// the workers publish to etcd) at scrape time: the measured imbalance
// overall and per MoE layer, and each worker's load. A coordinator that
// cannot answer (a standby, etcd away) exports nothing for the scrape.
type expertCollector struct {
	a       Admin
	model   func() string
	timeout time.Duration

	overall, layer, worker, window *prometheus.Desc
}

func newExpertCollector(a Admin, model func() string) *expertCollector {
	labels := []string{"model_name"}
	return &expertCollector{a: a, model: model, timeout: 2 * time.Second,
		overall: prometheus.NewDesc("moemesh:expert_imbalance", "Measured expert-parallel imbalance over the statistics window: the sum over MoE layers of the busiest worker's routed tokens over the sum of the mean (1 = balanced).", labels, nil),
		layer:   prometheus.NewDesc("moemesh:expert_layer_imbalance", "Measured imbalance of one MoE layer: its busiest worker's routed tokens over the mean.", append(labels, "layer"), nil),
		worker:  prometheus.NewDesc("moemesh:expert_worker_load", "Routed tokens each worker computed in the statistics window, over every MoE layer (replicas share an expert's tokens).", append(labels, "worker"), nil),
		window:  prometheus.NewDesc("moemesh:expert_stats_window_tokens", "Tokens routed in the statistics window.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *expertCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.overall
	ch <- c.layer
	ch <- c.worker
	ch <- c.window
}

// Collect implements prometheus.Collector.
func (c *expertCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.a.ExpertStats(ctx)
	if err != nil || st.GetWindowTokens() == 0 {
		return
	}
	m := c.model()
	ch <- prometheus.MustNewConstMetric(c.overall, prometheus.GaugeValue, st.GetImbalance(), m)
	ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, float64(st.GetWindowTokens()), m)
	for _, l := range st.GetLayers() {
		ch <- prometheus.MustNewConstMetric(c.layer, prometheus.GaugeValue, l.GetImbalance(), m, strconv.Itoa(int(l.GetLayer())))
	}
	for i, v := range st.GetWorkerLoad() {
		if i < len(st.GetWorkerIds()) {
			ch <- prometheus.MustNewConstMetric(c.worker, prometheus.GaugeValue, v, m, st.GetWorkerIds()[i])
		}
	}
}
