package planner_test

import (
	"fmt"

	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/model"
)

// Four workers registered for a layout of two in one TP group; then w2
// dies: the spare w3 takes its index.
func Example() {
	cfg, err := model.LoadConfig("../../model/testdata/tiny-a")
	if err != nil {
		fmt.Println(err)
		return
	}
	ws := []planner.Worker{{ID: "w4"}, {ID: "w2"}, {ID: "w3"}, {ID: "w1"}}
	p, err := planner.Initial(cfg, ws, planner.Options{Workers: 2, TP: 2, Epoch: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.IDs(), p.Layout.DP, "group of tp", p.Layout.TP, "spares", len(p.Spares))
	next, err := planner.Replan(cfg, p, map[string]bool{"w2": true}, p.Spares, planner.Options{Epoch: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(next.IDs(), "epoch", next.Placement.Epoch)
	// Output:
	// [w1 w2] 1 group of tp 2 spares 2
	// [w1 w3] epoch 2
}
