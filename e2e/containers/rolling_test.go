//go:build containers

package containers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/coordinator/clustertest"
)

// TestRollingRestart restarts every worker, one at a time, under a steady
// stream of chats: `moemeshctl drain` (run from the image, on the
// cluster's network, with the admin token), `docker restart`, wait for it
// to register again, `moemeshctl uncordon`, wait until it is a spare.
// Not one request fails, and every one has the single-process output.
func TestRollingRestart(t *testing.T) {
	c := startCluster(t)
	want, _ := c.chat(t, nil)
	c.checkOutput(t, "before the restarts", want)

	stop := make(chan struct{})
	var mu sync.Mutex
	var done, failed int
	var wg sync.WaitGroup
	for range 2 { // two clients, so a request is in flight at every step
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ids, err := c.tryChat()
				mu.Lock()
				switch {
				case err != nil:
					failed++
					t.Errorf("request %d during the rolling restart: %v", done+failed, err)
				case !slices.Equal(ids, want):
					failed++
					t.Errorf("request %d during the rolling restart (-want +got):\n%s", done+failed, cmp.Diff(want, ids))
				default:
					done++
				}
				mu.Unlock()
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	start := time.Now()
	firstEpoch, _ := c.layout(t)
	for _, w := range c.workers {
		step := time.Now()
		c.ctl(t, "drain", w.host, "--yes")
		started := mustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", w.name)
		w.restart(t, 10*time.Second)
		if again := mustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", w.name); again == started {
			t.Fatalf("%s: docker restart left its start time at %s", w.host, started)
		}
		clustertest.Eventually(t, time.Minute, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ids, err := c.registered(ctx)
			if err != nil || !slices.Contains(ids, w.host) {
				return fmt.Errorf("%s not registered after its restart (%v, %v)", w.host, ids, err)
			}
			return nil
		})
		c.ctl(t, "uncordon", w.host)
		clustertest.Eventually(t, time.Minute, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cordoned, err := c.st.Cordoned(ctx)
			if err != nil {
				return err
			}
			if len(cordoned) != 0 {
				return fmt.Errorf("still cordoned: %v", cordoned)
			}
			ids, err := c.registered(ctx)
			if err != nil {
				return err
			}
			if _, layout := c.layout(t); len(ids) != workers+spares || len(layout) != workers {
				return fmt.Errorf("registered %v, layout %v: want %d registered and %d in the layout", ids, layout, workers+spares, workers)
			}
			return nil
		})
		t.Logf("%s drained, restarted and uncordoned in %v", w.host, time.Since(step).Round(100*time.Millisecond))
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	t.Logf("rolling restart of %d workers in %v: %d requests served, %d failed", len(c.workers), time.Since(start).Round(100*time.Millisecond), done, failed)
	// Every drain but one of the spare moved a share of the layout to the
	// spare: at least three new epochs.
	if lastEpoch, _ := c.layout(t); lastEpoch < firstEpoch+workers {
		t.Errorf("placement epoch %d -> %d over %d drains: want at least %d new epochs", firstEpoch, lastEpoch, len(c.workers), workers)
	}
	if done < len(c.workers) {
		t.Errorf("only %d requests completed during the rolling restart; want at least one per worker", done)
	}
}

// tryChat is chat without a kill and without failing the test (it runs
// on other goroutines).
func (c *cluster) tryChat() ([]int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := c.sdk.Chat(ctx, chatRequest())
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var ids []int32
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return ids, fmt.Errorf("after %d tokens: %w", len(ids), err)
		}
		ids = append(ids, m.TokenIds...)
	}
}

var ctlSeq atomic.Int32

// ctl runs moemeshctl from the image in a container on the cluster's
// network, against both coordinators, with the admin token.
func (c *cluster) ctl(t *testing.T, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("%s-ctl-%d", c.net, ctlSeq.Add(1))
	all := []string{"run", "--rm", "--name", name, "--network", c.net, "--label", "io.moemesh.test=" + runID,
		"-v", secretsDir + ":/secrets:ro", "--entrypoint", "moemeshctl", moemeshImage}
	all = append(all, args...)
	all = append(all, "--endpoints", fmt.Sprintf("c0:%d,c1:%d", grpcPort, grpcPort), "--token-file", "/secrets/admin.token")
	t.Cleanup(func() { _, _ = docker("rm", "-f", name) }) // when the run timed out
	out, err := docker(all...)
	if err != nil {
		t.Fatalf("moemeshctl %v: %v\n%s", args, err, out)
	}
	return out
}
