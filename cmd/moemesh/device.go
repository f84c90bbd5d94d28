package main

import (
	"strconv"
	"strings"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/kernels/cuda"
)

// computeFlagUsage is the help of --compute.
const computeFlagUsage = "arithmetic of CPU matmuls with bf16 weights and two or more rows: f32 (bf16 widened, exact activations) or bf16 (activations rounded to bf16, VDPBF16PS; faster, less accurate)"

// parseDevice parses a --device value, "cpu" or "cuda:N", and a --compute
// value, "f32" or "bf16" (CPU only), and returns a function making that
// backend. For CUDA it opens the device once now, so a binary built
// without CUDA, or a host without the device, fails at once with a clear
// error; the first call returns that backend.
func parseDevice(device, compute string) (func() (kernels.Backend, error), error) {
	if compute == "" {
		compute = "f32"
	}
	cm, err := kernels.ParseCompute(compute)
	if err != nil {
		return nil, usagef("--compute %q: want f32 or bf16", compute)
	}
	if cm != kernels.ComputeF32 && device != "cpu" {
		return nil, usagef("--compute %s is for --device cpu", compute)
	}
	switch {
	case device == "cpu":
		return func() (kernels.Backend, error) { return kernels.NewCPU(kernels.WithCompute(cm)), nil }, nil
	case strings.HasPrefix(device, "cuda:"):
		n, err := strconv.Atoi(strings.TrimPrefix(device, "cuda:"))
		if err != nil || n < 0 {
			return nil, usagef("--device %q: want cpu or cuda:N with N a device index", device)
		}
		first, err := cuda.New(n)
		if err != nil {
			return nil, err
		}
		return func() (kernels.Backend, error) {
			if first != nil {
				b := first
				first = nil
				return b, nil
			}
			return cuda.New(n)
		}, nil
	}
	return nil, usagef("--device %q: want cpu or cuda:N", device)
}
