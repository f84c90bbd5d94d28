package kernels

import (
	"fmt"
	"slices"
	"testing"
)

// TestGroupTasksBalance checks how GroupedMatMul cuts MoE work at the
// bench preset's expert shapes when few experts are hot: every column of
// every group is covered once, and with the tasks claimed in order by the
// first free thread (as the pool does) the busiest thread has at most
// 1.35× its fair share of the multiply-adds.
func TestGroupTasksBalance(t *testing.T) {
	cases := [][]int{
		{16},                           // one hot expert, batch 16
		{1, 1},                         // two experts of one token each
		{1, 1, 1},                      // three: odd over two threads
		{15, 1},                        // one hot, one cold
		{3, 0, 2, 0, 0, 1},             // empty groups in between
		{1, 1, 1, 1, 1, 1, 1, 1},       // top-8 of one token
		{40, 30, 20, 10, 5, 1, 1, 1},   // a skewed prefill
		{128},                          // a prefill all at one expert
		{2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, // ten experts of two rows
	}
	for _, threads := range []int{2, 3, 4} {
		c := NewCPU(WithThreads(threads))
		for _, shape := range [][2]int{{256, 1024}, {1024, 256}} {
			n, k := shape[0], shape[1]
			for _, rows := range cases {
				t.Run(fmt.Sprintf("threads=%d/n=%d/k=%d/rows=%v", threads, n, k, rows), func(t *testing.T) {
					total := 0
					for _, r := range rows {
						total += r * n * k
					}
					tasks := c.groupTasks(rows, n, k, total)
					covered := make([][]bool, len(rows))
					for g := range rows {
						covered[g] = make([]bool, n)
					}
					load := make([]int, threads)
					for _, tk := range tasks {
						if tk.lo%4 != 0 || tk.lo >= tk.hi || tk.hi > n {
							t.Fatalf("task %+v: columns not a 4-aligned range of [0, %d)", tk, n)
						}
						for j := tk.lo; j < tk.hi; j++ {
							if covered[tk.g][j] {
								t.Fatalf("group %d column %d in two tasks", tk.g, j)
							}
							covered[tk.g][j] = true
						}
						i := slices.Index(load, slices.Min(load))
						load[i] += rows[tk.g] * (tk.hi - tk.lo) * k
					}
					for g, r := range rows {
						if r > 0 && slices.Contains(covered[g], false) {
							t.Fatalf("group %d: columns left out", g)
						}
					}
					fair := float64(total) / float64(threads)
					if got := float64(slices.Max(load)); got > 1.35*fair {
						t.Errorf("busiest thread %.0f multiply-adds, %.2f× its fair share %.0f (%d tasks)", got, got/fair, fair, len(tasks))
					}
				})
			}
		}
		c.Close()
	}
}
