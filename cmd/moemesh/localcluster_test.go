package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/scheduler"
)

// TestLocalClusterWorkerDies starts three real worker processes, runs a
// step, kills one worker with SIGKILL and checks that the next step fails
// within its deadline with an error naming the killed worker (not one of
// the survivors whose calls were cancelled), and that stopping the cluster
// leaves no worker process behind.
func TestLocalClusterWorkerDies(t *testing.T) {
	for _, victim := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("worker %d", victim), func(t *testing.T) { testWorkerDies(t, victim) })
	}
}

func testWorkerDies(t *testing.T, victim int) {
	var procs []*exec.Cmd
	workerStarted = func(_ int, c *exec.Cmd) { procs = append(procs, c) }
	defer func() { workerStarted = nil }()
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a")
	var errOut bytes.Buffer
	st, pool, stop, err := startLocalCluster(context.Background(), IOStreams{ErrOut: &errOut}, dir,
		&clusterFlags{Workers: 3, TP: 1, WireDType: "f32", ContextTokens: 256, Device: "cpu"})
	if err != nil {
		t.Fatalf("%v (stderr: %s)", err, errOut.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	d := st.(*coordinator.Driver)
	d.StepTimeout = 10 * time.Second
	step := func(id uint64) error {
		s := &scheduler.Seq{ID: id}
		if err := pool.Reserve(s, 4); err != nil {
			t.Fatal(err)
		}
		defer pool.Release(s)
		_, err := st.Forward(context.Background(), []model.SeqInput{{ID: id, Tokens: []int32{1, 2, 3, 4}, Blocks: s.Blocks}})
		return err
	}
	if err := step(0); err != nil {
		t.Fatalf("first step: %v", err)
	}
	if len(procs) != 3 {
		t.Fatalf("%d worker processes seen, want 3", len(procs))
	}
	if err := procs[victim].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = step(1)
	if err == nil {
		t.Fatal("a step with a dead worker succeeded")
	}
	if took := time.Since(start); took > d.StepTimeout+2*time.Second {
		t.Errorf("the failure took %v", took)
	}
	t.Logf("step error: %v", err)
	var we *coordinator.WorkerError
	if !errors.As(err, &we) {
		t.Fatalf("step error %v is not a *coordinator.WorkerError", err)
	}
	if we.Worker != victim || !we.Unreachable {
		t.Errorf("blamed worker %d (unreachable %v, reported by %d), want worker %d unreachable", we.Worker, we.Unreachable, we.Reporter, victim)
	}
	if code := status.Code(err); code != codes.Unavailable && code != codes.Aborted {
		t.Errorf("status %v, want Unavailable or Aborted", code)
	}
	stop()
	stopped = true
	for i, p := range procs {
		if p.ProcessState == nil {
			t.Errorf("worker %d still running after stop", i)
		}
	}
}
