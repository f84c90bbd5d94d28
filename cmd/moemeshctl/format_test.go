package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

func TestHeat(t *testing.T) {
	ones := make([]uint64, 130)
	for i := range ones {
		ones[i] = 1
	}
	// 130 experts: 3 per column, 44 columns, the last holding one expert
	// (a third of the others: level 1+int(8/3) = 3).
	wantOnes := ""
	for range 43 {
		wantOnes += "@"
	}
	wantOnes += "-"
	for _, tc := range []struct {
		name   string
		tokens []uint64
		want   string
	}{
		{"none", nil, ""},
		{"idle", []uint64{0, 0, 0}, "   "},
		{"levels", []uint64{0, 1, 8, 4}, " :@+"},
		{"uniform", []uint64{5, 5}, "@@"},
		{"buckets", ones, wantOnes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := heat(tc.tokens); got != tc.want {
				t.Errorf("heat = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHottest(t *testing.T) {
	layers := []*adminv1.LayerStats{
		{Layer: 0, Tokens: []uint64{5, 0, 15}},
		{Layer: 3, Tokens: []uint64{15, 5}},
	}
	want := []topExpert{
		{Layer: 0, Expert: 2, Tokens: 15, Share: 0.75},
		{Layer: 3, Expert: 0, Tokens: 15, Share: 0.75},
		{Layer: 0, Expert: 0, Tokens: 5, Share: 0.25},
	}
	if diff := cmp.Diff(want, hottest(layers, 3)); diff != "" {
		t.Errorf("hottest 3 (-want +got):\n%s", diff)
	}
	// Zero-token experts are never listed, whatever k.
	if got := len(hottest(layers, 100)); got != 4 {
		t.Errorf("hottest 100: %d entries, want 4", got)
	}
	if got := hottest(layers, 0); len(got) != 0 {
		t.Errorf("hottest 0 = %v", got)
	}
}

func TestExpertRanges(t *testing.T) {
	for _, tc := range []struct {
		ids  []uint32
		want string
	}{
		{nil, "-"},
		{[]uint32{4}, "4"},
		{[]uint32{3, 0, 1, 2, 7, 9, 10}, "0-3 7 9-10"},
	} {
		if got := expertRanges(tc.ids); got != tc.want {
			t.Errorf("expertRanges(%v) = %q, want %q", tc.ids, got, tc.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "-"}, {512, "512 B"}, {1536, "1.5 KiB"}, {3 << 30, "3.0 GiB"}, {1 << 62, "4.0 EiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range formats {
		if got, err := parseFormat(string(f)); err != nil || got != f {
			t.Errorf("parseFormat(%q) = %q, %v", f, got, err)
		}
	}
	if _, err := parseFormat("Table"); exitCode(err) != ExitUsage {
		t.Errorf("parseFormat(Table): %v, want a usage error", err)
	}
}
