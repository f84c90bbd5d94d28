package main

import (
	"errors"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// TestParseDeviceCompute checks --compute: f32 (also when empty) and bf16
// make a CPU backend with that arithmetic; anything else, or bf16 on a
// device other than the CPU, is a usage error.
func TestParseDeviceCompute(t *testing.T) {
	for _, tc := range []struct {
		device, compute string
		want            kernels.Compute
		bad             bool
	}{
		{"cpu", "", kernels.ComputeF32, false},
		{"cpu", "f32", kernels.ComputeF32, false},
		{"cpu", "bf16", kernels.ComputeBF16, false},
		{"cpu", "fp16", 0, true},
		{"cpu", "BF16", 0, true},
		{"cuda:0", "bf16", 0, true},
	} {
		newBackend, err := parseDevice(tc.device, tc.compute)
		if tc.bad {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Errorf("parseDevice(%q, %q): error %v, want a usage error", tc.device, tc.compute, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("parseDevice(%q, %q): %v", tc.device, tc.compute, err)
		}
		b, err := newBackend()
		if err != nil {
			t.Fatal(err)
		}
		c, ok := b.(*kernels.CPU)
		if !ok {
			t.Fatalf("parseDevice(%q, %q) made a %T", tc.device, tc.compute, b)
		}
		if got := c.Compute(); got != tc.want {
			t.Errorf("parseDevice(%q, %q): compute %v, want %v", tc.device, tc.compute, got, tc.want)
		}
		c.Close()
	}
}
