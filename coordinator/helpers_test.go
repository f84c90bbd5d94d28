package coordinator_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moemesh/moemesh/model/synth"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/worker"
)

var (
	genDir     string // a gen-model tiny checkpoint: 128 experts, top-8, 8/4 heads
	trafficDir string // hidden 1024 so that framing is small beside the rows
)

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "moemesh-coordinator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(tmp)
		genDir = filepath.Join(tmp, "tiny")
		if err := synth.Generate(genDir, synth.Options{Preset: "tiny", Seed: 3, DType: "f32"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg, _ := synth.Config("tiny")
		cfg.VocabSize, cfg.HiddenSize = 4096, 1024
		trafficDir = filepath.Join(tmp, "traffic")
		if err := synth.Generate(trafficDir, synth.Options{Config: cfg, Seed: 4, DType: "bf16"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// testModels lists tiny-a, tiny-c and the generated 128-expert model.
func testModels(t *testing.T) []string {
	return []string{
		filepath.Join("..", "model", "testdata", "tiny-a"),
		filepath.Join("..", "model", "testdata", "tiny-c"),
		genDir,
	}
}

func startWorker(t *testing.T) *worker.Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := worker.Serve(lis, worker.Config{Log: quietLog})
	t.Cleanup(func() { s.Stop(time.Second) })
	return s
}

// placementAll puts every expert on the single worker 0 for every layer.
func placementAll(experts, layers int) *pb.Placement {
	p := &pb.Placement{Epoch: 1}
	for l := range layers {
		we := &pb.WorkerExperts{}
		for e := range experts {
			we.Experts = append(we.Experts, uint32(e))
		}
		p.Layers = append(p.Layers, &pb.LayerPlacement{Layer: uint32(l), Workers: []*pb.WorkerExperts{we}})
	}
	return p
}
