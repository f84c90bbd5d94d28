package sharding_test

import (
	"fmt"

	"github.com/moemesh/moemesh/sharding"
)

// ExampleRebalance rebalances one MoE layer of four experts on two workers,
// each with a spare slot. Expert 0 carries most of the load, so it gets a
// replica in worker 1's spare slot: one copy loaded, and both workers then
// carry 6 of the 12 tokens.
func ExampleRebalance() {
	cur, err := sharding.PlaceExperts(4, 2, 0, 0, nil) // worker 0: {0, 2}, worker 1: {1, 3}
	if err != nil {
		fmt.Println(err)
		return
	}
	load := [][]float64{{8, 1, 2, 1}} // tokens routed to each expert in the window
	plan, err := sharding.Rebalance([]*sharding.Placement{cur}, load, sharding.RebalanceOptions{
		SlotsPerWorker: 3,
		MaxMoves:       10,
		ExpertBytes:    37748736, // one Qwen3-235B-A22B expert in bf16
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range plan.Moves {
		fmt.Printf("layer %d expert %d: from %d to %d\n", m.Layer, m.Expert, m.From, m.To)
	}
	fmt.Printf("slots %v\n", plan.Layers[0].Slots)
	fmt.Printf("imbalance %.2f -> %.2f, %d load, %d bytes\n", plan.Before, plan.After, plan.Loads, plan.Bytes)
	// Output:
	// layer 0 expert 0: from -1 to 1
	// slots [[0 2] [0 1 3]]
	// imbalance 1.67 -> 1.00, 1 load, 37748736 bytes
}
