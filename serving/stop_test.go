package serving

import (
	"strings"
	"testing"
)

// cutAtStop is the reference: text cut before the earliest stop string.
func cutAtStop(text string, stops []string) (string, bool) {
	first := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first < 0 {
		return text, false
	}
	return text[:first], true
}

// runMatcher feeds pieces and checks that no emitted text is ever taken
// back: the output is a prefix of the reference at every step.
func runMatcher(t *testing.T, stops []string, pieces []string) (string, bool) {
	t.Helper()
	m, err := newStopMatcher(stops)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for _, p := range pieces {
		o, hit := m.push(p)
		out += o
		if hit {
			return out, true
		}
	}
	return out + m.flush(), false
}

func TestStopMatcher(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stops  []string
		pieces []string
	}{
		{"none", nil, []string{"a", "b"}},
		{"inside a piece", []string{"END"}, []string{"abcENDdef"}},
		{"across pieces", []string{"END"}, []string{"ab", "cE", "N", "Dxyz"}},
		{"prefix that does not finish", []string{"END"}, []string{"EN", "X", "EN"}},
		{"earliest of two", []string{"world", "lo w"}, []string{"hel", "lo wor", "ld"}},
		{"overlapping prefixes", []string{"aab"}, []string{"a", "a", "a", "b", "c"}},
		{"multibyte", []string{"é!"}, []string{"caf", "é", "!", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hit := runMatcher(t, tc.stops, tc.pieces)
			want, wantHit := cutAtStop(strings.Join(tc.pieces, ""), tc.stops)
			if got != want || hit != wantHit {
				t.Errorf("got %q %v, want %q %v", got, hit, want, wantHit)
			}
		})
	}
	for _, bad := range [][]string{{""}, {strings.Repeat("x", maxStopLen+1)}, {"\xff"}, make([]string, maxStopStrings+1)} {
		if _, err := newStopMatcher(bad); err == nil {
			t.Errorf("stop strings %q accepted", bad)
		}
	}
}

func FuzzStopMatcher(f *testing.F) {
	f.Add("hello world, the END is near", "END", "o w", uint8(3))
	f.Add("aaab", "aab", "b", uint8(1))
	f.Fuzz(func(t *testing.T, text, s1, s2 string, step uint8) {
		stops := []string{}
		for _, s := range []string{s1, s2} {
			if s != "" && len(s) <= maxStopLen && strings.ToValidUTF8(s, "") == s {
				stops = append(stops, s)
			}
		}
		n := int(step%7) + 1
		var pieces []string
		for i := 0; i < len(text); i += n {
			pieces = append(pieces, text[i:min(i+n, len(text))])
		}
		got, hit := runMatcher(t, stops, pieces)
		want, wantHit := cutAtStop(text, stops)
		if got != want || hit != wantHit {
			t.Errorf("pieces %q stops %q: got %q %v, want %q %v", pieces, stops, got, hit, want, wantHit)
		}
	})
}
