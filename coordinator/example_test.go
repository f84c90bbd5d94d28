package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker"
)

// Example runs a model on two workers in one tensor-parallel group (each
// with half the attention heads and half the experts) and prints the greedy
// next token of a prompt, the same as one process gives (see model's
// Example).
func Example() {
	const dir = "../model/testdata/tiny-a"
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	layout, _ := sharding.NewLayout(2, 2)
	place, _ := sharding.PlaceExperts(cfg.NumExperts, 2, 0, 0, nil)
	place.Epoch = 1

	var addrs []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return
		}
		s := worker.Serve(lis, worker.Config{Log: slog.New(slog.DiscardHandler)})
		defer s.Stop(time.Second)
		addrs = append(addrs, s.Addr())
	}
	d, err := coordinator.Dial(addrs)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	ctx := context.Background()
	if _, err := d.Load(ctx, coordinator.LoadSpec{
		ModelDir: dir, Layout: layout, Placement: place, Layers: cfg.NumHiddenLayers, Vocab: cfg.VocabSize,
		PeerAddrs: addrs, WireDType: pb.DType_DTYPE_F32, KVBlocks: 16, BlockSize: 16,
	}); err != nil {
		fmt.Println(err)
		return
	}
	// Sequence 1 is served by attention group 1 mod 1 = 0; block 0 of that
	// group's KV cache holds its positions [0, 3) (the scheduler's block
	// pools hand blocks out in serving).
	rows, err := d.Forward(ctx, []model.SeqInput{{ID: 1, Tokens: []int32{1, 2, 3}, Blocks: []int32{0}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	best := 0
	for i, v := range rows[0] {
		if v > rows[0][best] {
			best = i
		}
	}
	fmt.Println("next token:", best)
	// Output: next token: 1914
}
