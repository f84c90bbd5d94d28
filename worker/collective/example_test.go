package collective_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/worker/collective"
)

// Two workers on loopback sum their partial attention outputs.
func Example() {
	const n = 2
	lis := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lis {
		lis[i], _ = net.Listen("tcp", "127.0.0.1:0")
		addrs[i] = lis[i].Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Join: NewMesh returns once every peer's stream is open.
	meshes := make([]*collective.Mesh, n)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			cfg := collective.DefaultMeshConfig()
			cfg.Self, cfg.Addrs, cfg.Epoch, cfg.Listener = w, addrs, 1, lis[w]
			var err error
			if meshes[w], err = collective.NewMesh(ctx, cfg); err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()

	// Every member calls the operation with the same tag and group.
	partial := [][]float32{{1, 2, 3}, {10, 20, 30}}
	tag := collective.Tag{Step: 1, Layer: 0, Phase: moemeshv1.Phase_PHASE_ALLREDUCE_ATTN}
	for w := range n {
		wg.Go(func() {
			if err := meshes[w].AllReduceSum(ctx, tag, []int{0, 1}, partial[w]); err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()
	for _, m := range meshes {
		m.Close()
	}
	fmt.Println(partial[0], partial[1])
	// Output: [11 22 33] [11 22 33]
}
