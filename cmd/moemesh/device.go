package main

import (
	"strconv"
	"strings"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/kernels/cuda"
)

// parseDevice parses a --device value, "cpu" or "cuda:N", and returns a
// function making that backend. For CUDA it opens the device once now, so a
// binary built without CUDA, or a host without the device, fails at once
// with a clear error; the first call returns that backend.
func parseDevice(device string) (func() (kernels.Backend, error), error) {
	switch {
	case device == "cpu":
		return func() (kernels.Backend, error) { return kernels.NewCPU(), nil }, nil
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
