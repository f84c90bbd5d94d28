package collective

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(5)-2)))
	}
	return v
}

// checkAllReduce runs an all-reduce over group and checks the result
// against the float64 sum (within tol times the sum of magnitudes) and for
// bitwise equality across members.
func checkAllReduce(t *testing.T, meshes []*Mesh, group []int, n int, tag Tag, tol float64) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(n), uint64(len(group))))
	inputs := make(map[int][]float32)
	data := make(map[int][]float32)
	for _, w := range group {
		inputs[w] = randVec(r, n)
		data[w] = append([]float32(nil), inputs[w]...)
	}
	errs := runAll(group, func(w int) error {
		return meshes[w].AllReduceSum(context.Background(), tag, group, data[w])
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", group[i], err)
		}
	}
	first := data[group[0]]
	for i := range n {
		var sum, mag float64
		for _, w := range group {
			sum += float64(inputs[w][i])
			mag += math.Abs(float64(inputs[w][i]))
		}
		if d := math.Abs(float64(first[i]) - sum); d > tol*mag+1e-30 {
			t.Fatalf("element %d = %g, float64 sum %g (error %g > %g)", i, first[i], sum, d, tol*mag)
		}
		for _, w := range group[1:] {
			if math.Float32bits(data[w][i]) != math.Float32bits(first[i]) {
				t.Fatalf("element %d: worker %d has %g, worker %d has %g", i, w, data[w][i], group[0], first[i])
			}
		}
	}
}

func TestAllReduceSum(t *testing.T) {
	const f32tol = 1e-6
	// bf16 keeps 8 significant bits (unit roundoff 2^-8): one rounding of
	// each contribution and one of the sum.
	bf16tol := 1.01 * 2 * math.Ldexp(1, -8)
	tests := []struct {
		name    string
		workers int
		group   []int
		n       int
		dtype   DType
		chunk   int
	}{
		{"two workers", 2, []int{0, 1}, 1000, F32, 0},
		{"three workers, odd length", 3, []int{0, 1, 2}, 1001, F32, 0},
		{"length below group size", 4, []int{0, 1, 2, 3}, 3, F32, 0},
		{"empty", 3, []int{0, 1, 2}, 0, F32, 0},
		{"subgroup in any order", 4, []int{3, 1, 0}, 517, F32, 0},
		{"single member", 2, []int{1}, 10, F32, 0},
		{"chunked frames", 3, []int{0, 1, 2}, 5000, F32, 256},
		{"bf16 wire", 4, []int{0, 1, 2, 3}, 999, BF16, 0},
		{"bf16 wire chunked", 3, []int{2, 0, 1}, 3000, BF16, 128},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			meshes := newCluster(t, tc.workers, func(_ int, c *MeshConfig) {
				c.WireDType = tc.dtype
				if tc.chunk > 0 {
					c.MaxChunkBytes = tc.chunk
				}
			})
			tol := f32tol
			if tc.dtype == BF16 {
				tol = bf16tol
			}
			for step := range uint64(3) {
				checkAllReduce(t, meshes, tc.group, tc.n, Tag{Step: step, Layer: 1, Phase: attn}, tol)
			}
			if tc.chunk > 0 {
				s := meshes[tc.group[0]].Stats().Phases[attn]
				if s.FramesSent <= s.MessagesSent {
					t.Errorf("FramesSent = %d, MessagesSent = %d: expected chunking", s.FramesSent, s.MessagesSent)
				}
			}
		})
	}
}

func TestAllGather(t *testing.T) {
	for _, dt := range []DType{F32, BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			meshes := newCluster(t, 3, func(_ int, c *MeshConfig) { c.WireDType = dt })
			group := []int{2, 0, 1}
			r := rand.New(rand.NewPCG(1, 2))
			const n = 300
			mine := map[int][]float32{}
			out := map[int][]float32{}
			for _, w := range group {
				mine[w] = randVec(r, n)
				out[w] = make([]float32, len(group)*n)
			}
			tag := Tag{Step: 1, Layer: 4, Phase: moemeshv1.Phase_PHASE_ALLGATHER}
			for i, err := range runAll(group, func(w int) error {
				return meshes[w].AllGather(context.Background(), tag, group, mine[w], out[w])
			}) {
				if err != nil {
					t.Fatalf("worker %d: %v", group[i], err)
				}
			}
			want := make([]float32, 0, len(group)*n)
			for _, w := range group {
				for _, x := range mine[w] {
					want = append(want, roundTrip(x, dt))
				}
			}
			for _, w := range group {
				if diff := cmp.Diff(want, out[w]); diff != "" {
					t.Fatalf("worker %d out (-want +got):\n%s", w, diff)
				}
			}
		})
	}
}

func TestAllGatherV(t *testing.T) {
	meshes := newCluster(t, 4, nil)
	group := []int{0, 1, 2, 3}
	sizes := []int{3, 3, 2, 0} // 8 tokens' rows over 4 ranks, one idle
	r := rand.New(rand.NewPCG(3, 4))
	mine := map[int][]float32{}
	out := map[int][][]float32{}
	for k, w := range group {
		mine[w] = randVec(r, sizes[k]*5)
		out[w] = make([][]float32, len(group))
		for j := range group {
			out[w][j] = make([]float32, sizes[j]*5)
		}
	}
	tag := Tag{Step: 9, Layer: 2, Phase: moemeshv1.Phase_PHASE_ALLGATHER}
	for i, err := range runAll(group, func(w int) error {
		return meshes[w].AllGatherV(context.Background(), tag, group, mine[w], out[w])
	}) {
		if err != nil {
			t.Fatalf("worker %d: %v", group[i], err)
		}
	}
	want := make([][]float32, len(group))
	for k, w := range group {
		want[k] = mine[w]
	}
	for _, w := range group {
		if diff := cmp.Diff(want, out[w]); diff != "" {
			t.Fatalf("worker %d (-want +got):\n%s", w, diff)
		}
	}
}

func TestAllToAllRandomSparse(t *testing.T) {
	const n, cols = 4, 16
	for _, dt := range []DType{F32, BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			meshes := newCluster(t, n, func(_ int, c *MeshConfig) { c.WireDType = dt; c.MaxChunkBytes = 512 })
			group := workers(n)
			r := rand.New(rand.NewPCG(5, 6))
			for step := range uint64(20) {
				for _, m := range meshes {
					m.ResetStats()
				}
				send := make([]map[int]Payload, n)
				var theory uint64 // tensor bytes that must cross the network
				for w := range n {
					send[w] = map[int]Payload{}
					for p := range n {
						if r.IntN(3) == 0 {
							continue // nothing for p: an empty frame
						}
						rows := r.IntN(40)
						pl := Payload{Rows: rows, Cols: cols, Data: randVec(r, rows*cols)}
						for range rows {
							pl.Aux = append(pl.Aux, int32(r.IntN(1000)-500))
						}
						send[w][p] = pl
						if p != w {
							theory += uint64(rows * cols * elemSize(dt))
						}
					}
				}
				got := make([]map[int]Payload, n)
				tag := Tag{Step: step, Layer: 3, Phase: moemeshv1.Phase_PHASE_DISPATCH}
				for w, err := range runAll(group, func(w int) error {
					var err error
					got[w], err = meshes[w].AllToAll(context.Background(), tag, group, send[w])
					return err
				}) {
					if err != nil {
						t.Fatalf("step %d worker %d: %v", step, w, err)
					}
				}
				for dst := range n {
					want := map[int]Payload{}
					for src := range n {
						pl, ok := send[src][dst]
						if !ok || pl.empty() {
							continue
						}
						if src != dst {
							pl.Data = append([]float32(nil), pl.Data...)
							quantize(pl.Data, pl.Data, dt)
							if pl.Rows == 0 {
								pl.Cols, pl.Data = 0, nil
							}
						}
						want[src] = pl
					}
					if diff := cmp.Diff(want, got[dst], cmp.Comparer(func(a, b []float32) bool {
						return cmp.Equal(append([]float32{}, a...), append([]float32{}, b...))
					})); diff != "" {
						t.Fatalf("step %d worker %d received (-want +got):\n%s", step, dst, diff)
					}
				}
				var sent, recv uint64
				for _, m := range meshes {
					s := m.Stats().Phases[moemeshv1.Phase_PHASE_DISPATCH]
					sent += s.TensorBytesSent
					recv += s.TensorBytesRecv
					if s.MessagesSent != n-1 || s.MessagesRecv != n-1 {
						t.Fatalf("messages sent/received %d/%d, want %d each", s.MessagesSent, s.MessagesRecv, n-1)
					}
				}
				if sent != theory || recv != theory {
					t.Fatalf("tensor bytes sent %d, received %d; theoretical %d", sent, recv, theory)
				}
			}
		})
	}
}

func TestSelfPayloadStaysLocal(t *testing.T) {
	meshes := newCluster(t, 2, nil)
	pl := Payload{Rows: 2, Cols: 2, Data: []float32{1, 2, 3, 4}, Aux: []int32{7, 8}}
	tag := Tag{Step: 1, Phase: moemeshv1.Phase_PHASE_COMBINE}
	var got map[int]Payload
	errs := runAll([]int{0, 1}, func(w int) error {
		var err error
		send := map[int]Payload{}
		if w == 0 {
			send[0] = pl
		}
		m, err := meshes[w].AllToAll(context.Background(), tag, []int{0, 1}, send)
		if w == 0 {
			got = m
		}
		return err
	})
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", w, err)
		}
	}
	if &got[0].Data[0] != &pl.Data[0] {
		t.Errorf("self payload was copied; want it returned as is")
	}
	if s := meshes[0].Stats().Phases[tag.Phase]; s.TensorBytesSent != 0 || s.TensorBytesRecv != 0 {
		t.Errorf("tensor bytes sent/received %d/%d for a self-only exchange, want 0", s.TensorBytesSent, s.TensorBytesRecv)
	}
}

func TestPeerLostMidOperation(t *testing.T) {
	meshes := newCluster(t, 3, nil)
	group := []int{0, 1, 2}
	tag := Tag{Step: 1, Layer: 0, Phase: attn}
	start := time.Now()
	errs := make(chan error, 2)
	for _, w := range []int{0, 1} {
		go func() {
			errs <- meshes[w].AllReduceSum(context.Background(), tag, group, make([]float32, 64))
		}()
	}
	meshes[2].Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrPeerLost) {
			t.Fatalf("err = %v, want ErrPeerLost", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("peer loss noticed after %v", d)
	}
	if diff := cmp.Diff([]int{2}, meshes[0].LostPeers()); diff != "" {
		t.Errorf("LostPeers (-want +got):\n%s", diff)
	}
	// The survivors keep working with each other.
	checkAllReduce(t, meshes, []int{0, 1}, 100, Tag{Step: 2, Phase: attn}, 1e-6)
	// And an operation that names the lost peer fails at once.
	err := meshes[0].AllReduceSum(context.Background(), Tag{Step: 3, Phase: attn}, group, make([]float32, 4))
	if !errors.Is(err, ErrPeerLost) {
		t.Errorf("err = %v, want ErrPeerLost", err)
	}
}

func TestTimeoutLeavesMeshUsable(t *testing.T) {
	meshes := newCluster(t, 2, nil)
	group := []int{0, 1}
	tag := Tag{Step: 1, Layer: 5, Phase: attn}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := meshes[0].AllReduceSum(ctx, tag, group, make([]float32, 8))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	// Worker 1 arrives late: it gets worker 0's first round but never the
	// second, and times out too.
	ctx1, cancel1 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel1()
	if err := meshes[1].AllReduceSum(ctx1, tag, group, make([]float32, 8)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("late worker: err = %v, want ErrTimeout", err)
	}
	// The abandoned messages are dropped; the next step works.
	checkAllReduce(t, meshes, group, 8, Tag{Step: 2, Layer: 5, Phase: attn}, 1e-6)
}

func TestConfigTimeout(t *testing.T) {
	meshes := newCluster(t, 2, func(_ int, c *MeshConfig) { c.Timeout = 50 * time.Millisecond })
	err := meshes[1].AllGather(context.Background(), Tag{Step: 1, Phase: moemeshv1.Phase_PHASE_ALLGATHER}, []int{0, 1}, make([]float32, 2), make([]float32, 4))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestCloseFailsOperationsInFlight(t *testing.T) {
	meshes := newCluster(t, 2, nil)
	done := make(chan error, 1)
	go func() {
		done <- meshes[0].AllReduceSum(context.Background(), Tag{Step: 1, Phase: attn}, []int{0, 1}, make([]float32, 4))
	}()
	meshes[0].Close()
	if err := <-done; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrPeerLost) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	err := meshes[0].AllReduceSum(context.Background(), Tag{Step: 2, Phase: attn}, []int{0, 1}, make([]float32, 4))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	meshes := newCluster(t, 3, nil)
	m := meshes[0]
	ctx := context.Background()
	tag := Tag{Step: 1, Phase: attn}
	tests := []struct {
		name string
		run  func() error
	}{
		{"group without self", func() error { return m.AllReduceSum(ctx, tag, []int{1, 2}, nil) }},
		{"duplicate member", func() error { return m.AllReduceSum(ctx, tag, []int{0, 1, 1}, nil) }},
		{"member out of range", func() error { return m.AllReduceSum(ctx, tag, []int{0, 3}, nil) }},
		{"no phase", func() error { return m.AllReduceSum(ctx, Tag{Step: 1}, []int{0, 1}, nil) }},
		{"all-gather out size", func() error { return m.AllGather(ctx, tag, []int{0, 1}, make([]float32, 2), make([]float32, 3)) }},
		{"all-gather-v out count", func() error { return m.AllGatherV(ctx, tag, []int{0, 1}, nil, nil) }},
		{"payload shape", func() error {
			_, err := m.AllToAll(ctx, tag, []int{0, 1}, map[int]Payload{1: {Rows: 2, Cols: 2, Data: make([]float32, 3)}})
			return err
		}},
		{"payload for non-member", func() error {
			_, err := m.AllToAll(ctx, tag, []int{0, 1}, map[int]Payload{2: {}})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}
