package coordinator_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/worker"
	"github.com/moemesh/moemesh/worker/collective"
)

// faultyExchange lets a test change one worker's collective calls.
type faultyExchange struct {
	worker.Exchange
	allToAll func(ctx context.Context, tag collective.Tag, group []int, send map[int]collective.Payload) (map[int]collective.Payload, error)
}

func (f *faultyExchange) AllToAll(ctx context.Context, tag collective.Tag, group []int, send map[int]collective.Payload) (map[int]collective.Payload, error) {
	if f.allToAll != nil {
		return f.allToAll(ctx, tag, group, send)
	}
	return f.Exchange.AllToAll(ctx, tag, group, send)
}

// wrapWorker returns a WrapExchange hook that applies fault only on worker victim.
func wrapWorker(victim int, fault func(inner worker.Exchange) *faultyExchange) func(int, worker.Exchange) worker.Exchange {
	return func(self int, ex worker.Exchange) worker.Exchange {
		if self != victim {
			return ex
		}
		return fault(ex)
	}
}

// stepFails runs one step and checks that it fails with an error matching
// want within the step deadline.
func stepFails(t *testing.T, c *cluster, vocab int, want ...codes.Code) {
	t.Helper()
	start := time.Now()
	_, err := c.driver.Forward(context.Background(), batch(t, c.pool, vocab))
	if err == nil {
		t.Fatal("step succeeded; want a failure")
	}
	if !errors.Is(err, coordinator.ErrStep) {
		t.Errorf("error %v does not wrap coordinator.ErrStep", err)
	}
	if got := status.Code(err); !slices.Contains(want, got) {
		t.Errorf("status %v, want one of %v (error: %v)", got, want, err)
	}
	if took := time.Since(start); took > c.driver.StepTimeout+2*time.Second {
		t.Errorf("failure took %v, beyond the %v step deadline", took, c.driver.StepTimeout)
	}
}

// TestPeerDiesMidStep kills a worker while a step is in flight: the step
// fails promptly (UNAVAILABLE for the dead worker itself, ABORTED on the
// survivors, whichever the driver sees first) and nothing leaks.
func TestPeerDiesMidStep(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	var c *cluster
	var once sync.Once
	killed := make(chan struct{})
	c = newCluster(t, dir, clusterConfig{workers: 4, tp: 2, stepTimeout: 10 * time.Second,
		mesh: wrapWorker(3, func(inner worker.Exchange) *faultyExchange {
			return &faultyExchange{Exchange: inner, allToAll: func(ctx context.Context, tag collective.Tag, g []int, send map[int]collective.Payload) (map[int]collective.Payload, error) {
				if tag.Layer == 1 {
					once.Do(func() { go func() { c.servers[3].Kill(); close(killed) }() })
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return inner.AllToAll(ctx, tag, g, send)
			}}
		})})
	stepFails(t, c, 151936, codes.Unavailable, codes.Aborted)
	<-killed
}

// TestMalformedDispatch: a peer sends rows of the wrong width, then a row
// asking for an expert the receiver does not host; both void the step.
func TestMalformedDispatch(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	for _, tc := range []struct {
		name   string
		mangle func(p collective.Payload) collective.Payload
	}{
		{"wrong row width", func(p collective.Payload) collective.Payload {
			p.Cols--
			p.Data = p.Data[:p.Rows*p.Cols]
			return p
		}},
		{"expert not hosted", func(p collective.Payload) collective.Payload {
			p.Aux = append([]int32(nil), p.Aux...)
			p.Aux[1] = 10_000
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, dir, clusterConfig{workers: 3, tp: 1, stepTimeout: 10 * time.Second,
				mesh: wrapWorker(0, func(inner worker.Exchange) *faultyExchange {
					return &faultyExchange{Exchange: inner, allToAll: func(ctx context.Context, tag collective.Tag, g []int, send map[int]collective.Payload) (map[int]collective.Payload, error) {
						if tag.Phase == pb.Phase_PHASE_DISPATCH {
							for dst, p := range send {
								if dst != 0 && p.Rows > 0 {
									send[dst] = tc.mangle(p)
								}
							}
						}
						return inner.AllToAll(ctx, tag, g, send)
					}}
				})})
			stepFails(t, c, 151936, codes.Aborted)
		})
	}
}

// TestStaleStepFrame: a worker tags its dispatch with an older step; the
// receivers reject the frame and the step fails within its deadline.
func TestStaleStepFrame(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	c := newCluster(t, dir, clusterConfig{workers: 2, tp: 1, stepTimeout: 5 * time.Second,
		mesh: wrapWorker(1, func(inner worker.Exchange) *faultyExchange {
			return &faultyExchange{Exchange: inner, allToAll: func(ctx context.Context, tag collective.Tag, g []int, send map[int]collective.Payload) (map[int]collective.Payload, error) {
				if tag.Step == 2 && tag.Layer == 1 {
					tag.Step = 1
				}
				return inner.AllToAll(ctx, tag, g, send)
			}}
		})})
	if _, err := c.driver.Forward(context.Background(), batch(t, c.pool, 151936)); err != nil {
		t.Fatalf("step 1: %v", err)
	}
	start := time.Now()
	_, err := c.driver.Forward(context.Background(), []model.SeqInput{{ID: 9, Tokens: []int32{1}, Blocks: []int32{200}}})
	if err == nil {
		t.Fatal("step 2 succeeded with a stale frame")
	}
	// The receiver refuses the frame (ABORTED) and closes the link to its
	// sender, so the sender may report that peer lost (UNAVAILABLE) before
	// the receiver's answer arrives; either names the failed step.
	if code := status.Code(err); code != codes.Aborted && code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Errorf("status %v, want Aborted, Unavailable or DeadlineExceeded: %v", code, err)
	}
	if took := time.Since(start); took > c.driver.StepTimeout+2*time.Second {
		t.Errorf("failure took %v", took)
	}
}

// TestShardMismatch: a config that promises more experts than the
// checkpoint holds fails LoadShard with an error naming the tensor.
func TestShardMismatch(t *testing.T) {
	checkLeaks(t)
	src := filepath.Join("..", "model", "testdata", "tiny-a")
	dir := t.TempDir()
	st, err := os.ReadFile(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), st, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NumHiddenLayers = 5 // the checkpoint has 4
	js, _ := cfg.Marshal()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startWorker(t)
	_, err = s.Worker.LoadShard(context.Background(), &pb.LoadShardRequest{
		ModelDir: dir, Layout: &pb.Layout{Workers: 1, Tp: 1}, Placement: placementAll(16, 5),
		PeerAddrs: []string{s.Addr()}, KvBlocks: 8, KvBlockSize: 4,
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "model.layers.4.") {
		t.Fatalf("err = %v; want InvalidArgument naming a model.layers.4 tensor", err)
	}
}
