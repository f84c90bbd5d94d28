package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/internal/syncio"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/sharding"
)

// clusterPlan checks a layout against the model before any process starts.
func clusterPlan(dir string, c *clusterFlags) (*model.Config, sharding.Layout, *sharding.Placement, error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, sharding.Layout{}, nil, err
	}
	layout, err := sharding.NewLayout(c.Workers, c.TP)
	if err != nil {
		return nil, layout, nil, &usageError{err}
	}
	if _, err := sharding.SplitHeads(cfg.NumAttentionHeads, cfg.NumKeyValueHeads, c.TP); err != nil {
		return nil, layout, nil, &usageError{fmt.Errorf("--tp %d does not fit the model: %w", c.TP, err)}
	}
	if cfg.NumExperts == 0 {
		return nil, layout, nil, &usageError{fmt.Errorf("a dense model (no experts) cannot run on several workers yet")}
	}
	pl, err := sharding.PlaceExperts(cfg.NumExperts, c.Workers, c.ExpertReplicas, 0, nil)
	if err != nil {
		return nil, layout, nil, &usageError{err}
	}
	pl.Epoch = 1
	return cfg, layout, pl, nil
}

// startLocalCluster starts c.Workers worker processes on loopback, loads
// their shards and returns a step driver. The workers exit when the
// returned function runs, or when this process dies (they watch stdin).
func startLocalCluster(ctx context.Context, s IOStreams, dir string, c *clusterFlags) (model.Stepper, scheduler.Allocator, func(), error) {
	cfg, layout, pl, err := clusterPlan(dir, c)
	if err != nil {
		return nil, nil, nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	var procs []*exec.Cmd
	var stdins []io.Closer
	var lt localTLSFlags // mutual TLS among these processes, with an ephemeral CA
	var coordTLS clusterTLSFlags
	cleanPKI, err := lt.setup(&coordTLS, c.Workers)
	if err != nil {
		return nil, nil, nil, err
	}
	stop := func() {
		defer cleanPKI()
		for _, in := range stdins {
			in.Close()
		}
		for _, p := range procs {
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				p.Process.Kill()
				<-done
			}
		}
	}
	addrs := make([]string, c.Workers)
	stderr := &syncio.Writer{W: s.ErrOut} // one writer shared by every worker's stderr copier
	for w := range c.Workers {
		cmd := exec.Command(exe, append([]string{"worker", "--listen", "127.0.0.1:0", "--exit-on-stdin-close", "--log-level", "error", "--device", c.Device, "--compute", cmp.Or(c.Compute, "f32")}, lt.workerArgs(w)...)...)
		cmd.Stderr = stderr
		// Share this machine's cores among the workers: oversubscribed
		// compute threads spin against each other.
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/c.Workers)))
		in, err := cmd.StdinPipe()
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("starting worker %d: %w", w, err)
		}
		procs, stdins = append(procs, cmd), append(stdins, in)
		if workerStarted != nil {
			workerStarted(w, cmd)
		}
		addr, err := readListenAddr(out, 30*time.Second)
		if err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("worker %d: %w", w, err)
		}
		addrs[w] = addr
	}
	dialTLS, err := coordTLS.coordinatorDial(slog.New(slog.NewTextHandler(s.ErrOut, nil)))
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	d, err := coordinator.Dial(addrs, dialTLS...)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	closeAll := func() { d.Close(); stop() }
	bs := 16
	blocks := (c.ContextTokens + bs - 1) / bs
	wire := pb.DType_DTYPE_F32
	if c.WireDType == "bf16" {
		wire = pb.DType_DTYPE_BF16
	}
	if _, err := d.Load(ctx, coordinator.LoadSpec{
		ModelDir: dir, Layout: layout, Placement: pl, Layers: cfg.NumHiddenLayers, Vocab: cfg.VocabSize,
		PeerAddrs: addrs, WireDType: wire, KVBlocks: blocks, BlockSize: bs, MeshEpoch: 1,
	}); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return d, scheduler.DriverPools(d, bs, blocks), closeAll, nil
}

// workerStarted, when set (by tests), sees every worker process started.
var workerStarted func(w int, cmd *exec.Cmd)

// listenPrefix starts the line a worker prints once it is serving.
const listenPrefix = "moemesh worker listening on "

func readListenAddr(r io.Reader, timeout time.Duration) (string, error) {
	type res struct {
		addr string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), listenPrefix); ok {
				ch <- res{addr: a}
				io.Copy(io.Discard, r) // keep draining so the worker never blocks on stdout
				return
			}
		}
		ch <- res{err: fmt.Errorf("exited before listening (%v)", sc.Err())}
	}()
	select {
	case r := <-ch:
		return r.addr, r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("not listening after %v", timeout)
	}
}
