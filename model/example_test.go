package model_test

import (
	"context"
	"fmt"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// Example loads a checkpoint directory, runs one batched step for a
// three-token prompt through the paged KV cache and prints the greedy next
// token. scheduler.Generate runs the whole generation loop.
func Example() {
	cpu := kernels.NewCPU()
	m, err := model.Open("testdata/tiny-a", cpu, model.OpenOptions{CloseBackend: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	// The caller owns the block table: block 0 of the cache holds the
	// prompt's positions [0, 3) (the default block size is larger). In
	// serving, the scheduler's block pools hand blocks out.
	prompt := []int32{1, 2, 3}
	rows, err := m.Forward(context.Background(), []model.SeqInput{{ID: 1, Tokens: prompt, Blocks: []int32{0}}})
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
	fmt.Println("vocabulary:", len(rows[0]), "next token:", best)
	// Output: vocabulary: 2048 next token: 1914
}
