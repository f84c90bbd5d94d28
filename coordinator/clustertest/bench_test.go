package clustertest_test

import (
	"context"
	"testing"
	"time"

	. "github.com/moemesh/moemesh/coordinator/clustertest"
)

// BenchmarkRecovery measures, with the default lease TTLs (5 s) and
// memberlist settings, on real processes:
//   - kill-to-replan: SIGKILL of a worker mid-generation to the next
//     placement epoch in etcd (the dead worker acted on);
//   - kill-to-token: SIGKILL to the next token at the client;
//   - publish-to-token: the new epoch's publication to that token (loading
//     the lost shard on the spare, plus the re-prefill);
//   - stop-to-replan: SIGSTOP of a worker (only memberlist notices) to the
//     next epoch;
//   - failover: SIGKILL of the leading coordinator to the standby's
//     /health 200.
//
// Run: go test -run '^$' -bench Recovery -benchtime 1x ./coordinator/clustertest/
func BenchmarkRecovery(b *testing.B) {
	ttl := 5 * time.Second
	for range b.N {
		c := Processes(binary).Start(b, Config{Model: modelDir, Workers: 2, Spares: 2, Coordinators: 2, LeaseTTL: ttl, WorkerTTL: ttl})
		lead := Leader(b, c, 60*time.Second)
		epoch := func() uint64 {
			cur, err := c.Store().CurrentPlacement(context.Background())
			if err != nil {
				return 0
			}
			return cur.Epoch
		}
		e0 := epoch()
		var killed, first time.Time
		req := request(false)
		req.MaxTokens = 400
		replanned := make(chan time.Time, 1)
		go func() {
			for epoch() == e0 {
				time.Sleep(5 * time.Millisecond)
			}
			replanned <- time.Now()
		}()
		_, err := Generate(context.Background(), lead.Addr(), req, func(n int) {
			if !killed.IsZero() && first.IsZero() {
				first = time.Now()
			}
			if n >= 50 && killed.IsZero() {
				killed = time.Now()
				c.Workers()[0].Kill(b)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		re := <-replanned
		cur, err := c.Store().CurrentPlacement(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(re.Sub(killed).Milliseconds()), "kill-to-replan-ms")
		b.ReportMetric(float64(first.Sub(killed).Milliseconds()), "kill-to-token-ms")
		b.ReportMetric(float64(first.Sub(time.UnixMilli(cur.CreatedUnixMs)).Milliseconds()), "publish-to-token-ms")

		e1 := cur.Epoch
		stopped := time.Now()
		if err := c.Workers()[1].Pause(b); err != nil {
			b.Fatal(err)
		}
		Eventually(b, 60*time.Second, func() error {
			if epoch() == e1 {
				return context.DeadlineExceeded
			}
			return nil
		})
		b.ReportMetric(float64(time.Since(stopped).Milliseconds()), "stop-to-replan-ms")

		dead := time.Now()
		lead.Kill(b)
		for _, m := range c.Coordinators() {
			if m.ID() != lead.ID() {
				Eventually(b, 60*time.Second, func() error {
					if !Healthy(m) {
						return context.DeadlineExceeded
					}
					return nil
				})
			}
		}
		b.ReportMetric(float64(time.Since(dead).Milliseconds()), "failover-ms")
		b.ReportMetric(ttl.Seconds()*1000, "lease-ttl-ms")
	}
}
