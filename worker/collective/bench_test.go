package collective

import (
	"context"
	"testing"
)

// BenchmarkAllReduceSum sums a 64-token hidden state of Qwen3-235B-A22B
// (64 × 4096 f32) over a TP group of 4 on loopback.
func BenchmarkAllReduceSum(b *testing.B) {
	for _, dt := range []DType{F32, BF16} {
		b.Run(dt.String(), func(b *testing.B) {
			meshes := newCluster(b, 4, func(_ int, c *MeshConfig) { c.WireDType = dt })
			group := workers(4)
			data := make([][]float32, 4)
			for w := range data {
				data[w] = make([]float32, 64*4096)
			}
			b.SetBytes(int64(len(data[0]) * 4))
			for i := 0; b.Loop(); i++ {
				for _, err := range runAll(group, func(w int) error {
					return meshes[w].AllReduceSum(context.Background(), Tag{Step: uint64(i), Phase: attn}, group, data[w])
				}) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkAllToAll dispatches 64 tokens × 8 experts of 4096 f32 spread
// evenly over 4 workers (each worker sends 3/4 of its rows off-worker).
func BenchmarkAllToAll(b *testing.B) {
	meshes := newCluster(b, 4, nil)
	group := workers(4)
	const rows, cols = 64 * 8 / 4, 4096
	send := make(map[int]Payload)
	for p := range 4 {
		send[p] = Payload{Rows: rows, Cols: cols, Data: make([]float32, rows*cols), Aux: make([]int32, 2*rows)}
	}
	b.SetBytes(3 * rows * cols * 4)
	for i := 0; b.Loop(); i++ {
		for _, err := range runAll(group, func(w int) error {
			_, err := meshes[w].AllToAll(context.Background(), Tag{Step: uint64(i), Phase: 3}, group, send)
			return err
		}) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
