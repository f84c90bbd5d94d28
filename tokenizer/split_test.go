package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// oraclePattern is qwen2Pattern with \s, \S and the case-insensitive group
// spelled out as Unicode classes, so that regexp2 follows the same Unicode
// definitions as Hugging Face's Oniguruma regex: \s is the White_Space
// property and (?i) folds U+017F to s.
var oraclePattern = strings.NewReplacer(
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)`, `'[sSſ]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]`,
	`[^\s\p{L}\p{N}]`, `[^\t-\r\x85\p{Z}\p{L}\p{N}]`,
	`\s`, `[\t-\r\x85\p{Z}]`,
	`\S`, `[^\t-\r\x85\p{Z}]`,
).Replace(qwen2Pattern)

func oracleSplit(t testing.TB, s string) []string {
	t.Helper()
	rs, err := newRegexSplitter(oraclePattern)
	if err != nil {
		t.Fatal(err)
	}
	return rs.split(s, nil)
}

func TestQwenSplitter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"Hello world", []string{"Hello", " world"}},
		{"I'm HERE'S 'x", []string{"I", "'m", " HERE", "'S", " '", "x"}},
		{"it'ſ", []string{"it", "'ſ"}},
		{"abc123", []string{"abc", "1", "2", "3"}},
		{"a  b", []string{"a", " ", " b"}},
		{"a   ", []string{"a", "   "}},
		{"a \n\n b", []string{"a", " \n\n", " b"}},
		{"x\t\tfoo", []string{"x", "\t", "\tfoo"}},
		{"x  !!\n\nok", []string{"x", " ", " !!\n\n", "ok"}},
		{"\r\n\r\n", []string{"\r\n\r\n"}},
		{"a \n \t", []string{"a", " \n", " \t"}},
		{"你好，世界", []string{"你好", "，世界"}},
		{"x\u00a0\u00a0y", []string{"x", "\u00a0", "\u00a0y"}},
		{"€5 €", []string{"€", "5", " €"}},
		{"\u0085end", []string{"\u0085end"}},
		{"a\u0085\u0085\u0085b", []string{"a", "\u0085\u0085", "\u0085b"}},
		{"\ufeff\ufeffx", []string{"\ufeff\ufeff", "x"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := qwenSplitter{}.split(tc.in, nil)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("split(%q) (-want +got):\n%s", tc.in, diff)
			}
			if diff := cmp.Diff(tc.want, oracleSplit(t, tc.in)); diff != "" {
				t.Errorf("oracle split(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestQwenSplitterMatchesRegexOnGolden(t *testing.T) {
	for _, tc := range loadGolden(t).Encode {
		if diff := cmp.Diff(oracleSplit(t, tc.Text), qwenSplitter{}.split(tc.Text, nil)); diff != "" {
			t.Errorf("split(%q) (-regex +hand):\n%s", tc.Text, diff)
		}
	}
}

// FuzzSplit checks the hand-written splitter against regexp2 running the
// pattern itself.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"Hello world", "a \n\n b", "x\t\tfoo", "it's 'S", "€5 €\r\n", "\u0085\u00a0x", "ab  \n"} {
		f.Add(s)
	}
	rs, err := newRegexSplitter(oraclePattern)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		got := qwenSplitter{}.split(s, nil)
		if diff := cmp.Diff(rs.split(s, nil), got); diff != "" {
			t.Errorf("split(%q) (-regex +hand):\n%s", s, diff)
		}
		if strings.Join(got, "") != s {
			t.Errorf("split(%q) loses text: %q", s, got)
		}
	})
}
