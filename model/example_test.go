package model_test

import (
	"context"
	"fmt"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// Example loads a checkpoint directory, runs one batched step for a
// three-token prompt through the paged KV cache and prints the greedy next
// token.
func Example() {
	cpu := kernels.NewCPU()
	m, err := model.Open("testdata/tiny-a", cpu, model.OpenOptions{CloseBackend: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	pool := m.NewBlockPool()
	seq := &model.Seq{ID: 1}
	prompt := []int32{1, 2, 3}
	if err := pool.Reserve(seq, len(prompt)); err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Release(seq)
	rows, err := m.Forward(context.Background(), []model.SeqInput{{ID: seq.ID, Tokens: prompt, Blocks: seq.Blocks}})
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
