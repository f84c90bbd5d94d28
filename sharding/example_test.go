package sharding_test

import (
	"fmt"

	"github.com/moemesh/moemesh/sharding"
)

// Example plans Qwen3-235B-A22B on 16 workers: two attention groups of eight
// TP ranks, the 128 experts spread over all 16 workers.
func Example() {
	shape := sharding.Qwen3_235B_A22B()
	layout, err := sharding.NewLayout(16, 8)
	if err != nil {
		fmt.Println(err)
		return
	}
	heads, err := sharding.SplitHeads(shape.Heads, shape.KVHeads, layout.TP)
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := sharding.PlaceExperts(shape.Experts, layout.Workers, 0, 0, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	w := 11
	m := sharding.WorkerMemory(shape, layout, p, w, 32768)
	rh := heads[layout.Rank(w)]
	fmt.Printf("worker %d: group %d rank %d\n", w, layout.Group(w), layout.Rank(w))
	fmt.Printf("query heads %v, KV heads %v\n", rh.QHeads, rh.KVHeads)
	fmt.Printf("experts %v\n", p.Slots[w])
	fmt.Printf("weights %.1f GB, KV cache %.2f GB\n", float64(m.Weights)/1e9, float64(m.KVCache)/1e9)
	// Output:
	// worker 11: group 1 rank 3
	// query heads [24 32], KV heads [1 2]
	// experts [11 27 43 59 75 91 107 123]
	// weights 30.6 GB, KV cache 1.58 GB
}
