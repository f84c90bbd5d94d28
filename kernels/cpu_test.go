package kernels_test

import (
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/kernels/kernelstest"
)

func newCPU(t testing.TB) func() kernels.Backend {
	return func() kernels.Backend {
		c := kernels.NewCPU()
		t.Cleanup(c.Close)
		return c
	}
}

func TestCPU(t *testing.T) {
	kernelstest.Run(t, newCPU(t))
}

// TestCPUThreads runs the suite with more threads than this machine may
// have, so that every operation is split across the pool.
func TestCPUThreads(t *testing.T) {
	kernelstest.Run(t, func() kernels.Backend {
		c := kernels.NewCPU(kernels.WithThreads(5))
		t.Cleanup(c.Close)
		return c
	})
}
