package worker

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// accepting fails with UNAVAILABLE once Shutdown began.
func (w *Worker) accepting() error {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	if w.draining || w.stopped {
		return status.Error(codes.Unavailable, ErrShutdown.Error())
	}
	return nil
}

// underLife returns ctx, also cancelled (with the cause) when the worker's
// life ends: Fence or an immediate Shutdown.
func (w *Worker) underLife(ctx context.Context) (context.Context, func()) {
	w.hmu.Lock()
	life := w.life
	w.hmu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(life, func() { cancel(context.Cause(life)) })
	return ctx, func() { stop(); cancel(nil) }
}

// cut cancels every step and load in flight with cause; with renew a
// new life begins (Fence), otherwise the worker is stopped.
func (w *Worker) cut(cause error, renew bool) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	w.endLife(cause)
	if renew {
		w.life, w.endLife = context.WithCancelCause(context.Background())
	}
}

// liveEpochs lists the live epochs in order; the caller holds stepMu.
func (w *Worker) liveEpochs() []uint64 {
	var out []uint64
	for n := range w.epochs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// refreshHealth republishes what Health reports. It takes stepMu, so the
// caller must not hold it.
func (w *Worker) refreshHealth() {
	w.stepMu.Lock()
	var v healthView
	resident, _ := w.residentLocked()
	v.resident = resident
	for n, e := range w.epochs {
		if !v.serving || n > v.epoch {
			v.serving, v.epoch, v.self = true, n, e.base.self
		}
	}
	for _, b := range w.bases {
		if b.mesh != nil {
			v.meshes = append(v.meshes, b.mesh)
		}
	}
	w.stepMu.Unlock()
	w.hmu.Lock()
	w.health = v
	w.hmu.Unlock()
}

// Health implements WorkerService. It never waits for a step or a load:
// it reads a snapshot kept beside them. kv_blocks_free is 0: the KV block
// pool belongs to the scheduler, not to the worker.
func (w *Worker) Health(context.Context, *pb.HealthRequest) (*pb.HealthResponse, error) {
	w.hmu.Lock()
	v, draining := w.health, w.draining || w.stopped
	w.hmu.Unlock()
	resp := &pb.HealthResponse{WorkerIndex: uint32(v.self), PlacementEpoch: v.epoch, LastStep: w.lastStep.Load(), ResidentWeightBytes: uint64(v.resident)}
	switch {
	case draining:
		resp.State = pb.WorkerState_WORKER_STATE_DRAINING
	case w.loading.Load() > 0:
		resp.State = pb.WorkerState_WORKER_STATE_LOADING
	case v.serving:
		resp.State = pb.WorkerState_WORKER_STATE_SERVING
	default:
		resp.State = pb.WorkerState_WORKER_STATE_EMPTY
	}
	lost := map[int]bool{}
	for _, m := range v.meshes {
		for _, p := range m.LostPeers() {
			lost[p] = true
		}
	}
	for p := range lost {
		resp.LostPeers = append(resp.LostPeers, uint32(p))
	}
	slices.Sort(resp.LostPeers)
	return resp, nil
}

// Shutdown implements WorkerService. It refuses new steps and loads with
// UNAVAILABLE at once; with drain it waits for the step in flight (until
// ctx ends, then DEADLINE_EXCEEDED), without it cancels the steps in flight
// (they fail UNAVAILABLE). Then it drops every shard and closes Done, and
// a worker.Server stops serving.
func (w *Worker) Shutdown(ctx context.Context, req *pb.ShutdownRequest) (*pb.ShutdownResponse, error) {
	w.hmu.Lock()
	already := w.draining || w.stopped
	w.draining = true
	w.hmu.Unlock()
	if already {
		<-w.done
		return &pb.ShutdownResponse{}, nil
	}
	w.cfg.Log.Info("shutting down", "drain", req.GetDrain(), "reason", req.GetReason())
	var err error
	if !req.GetDrain() {
		w.cut(ErrShutdown, false)
	}
	locked := make(chan struct{})
	go func() {
		w.stepMu.Lock()
		close(locked)
	}()
	select {
	case <-locked:
	case <-ctx.Done():
		err = status.Errorf(codes.DeadlineExceeded, "worker: the step in flight did not finish before the drain deadline: %v", ctx.Err())
		w.cut(ErrShutdown, false)
		<-locked
	}
	w.cut(ErrShutdown, false) // loads still reading weights give up
	_ = w.dropAll()
	w.stepMu.Unlock()
	w.refreshHealth()
	w.hmu.Lock()
	w.stopped = true
	w.hmu.Unlock()
	close(w.done)
	return &pb.ShutdownResponse{}, err
}

// Done is closed when Shutdown has stopped the worker.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Fence drops every shard at once: steps and loads in flight fail (ABORTED),
// and the worker is EMPTY until a LoadShard of an epoch newer than any it
// loaded before. The control plane calls it when the worker's lease was
// revoked, so a worker back from a partition never serves a stale epoch.
func (w *Worker) Fence() error {
	w.cut(ErrFenced, true)
	w.stepMu.Lock()
	err := w.dropAll()
	w.stepMu.Unlock()
	w.refreshHealth()
	w.cfg.Log.Warn("fenced: every shard dropped")
	return err
}

// Close releases every shard and stops the worker (steps in flight fail
// UNAVAILABLE); it does not close Done.
func (w *Worker) Close() error {
	w.hmu.Lock()
	w.stopped = true
	w.hmu.Unlock()
	w.cut(ErrShutdown, false)
	w.stepMu.Lock()
	err := w.dropAll()
	w.stepMu.Unlock()
	w.refreshHealth()
	return err
}

// defaultKVBytes is half the host memory /proc/meminfo reports available,
// or 8 GiB when it cannot be read.
func defaultKVBytes() int64 {
	const fallback = 8 << 30
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return fallback
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil && kb > 0 {
				return kb << 10 / 2
			}
		}
	}
	return fallback
}
