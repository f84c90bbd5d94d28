package tokenizer

import (
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// qwen2Pattern is the pre-tokenizer regex of Qwen2 and Qwen3 tokenizer.json.
const qwen2Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// gpt2Pattern is the regex that a ByteLevel pre-tokenizer with use_regex
// applies.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// splitter cuts normalized text into words; each word is encoded by BPE on
// its own. Words are appended to dst as substrings of s.
type splitter interface {
	split(s string, dst []string) []string
}

// qwenSplitter is a hand-written equivalent of qwen2Pattern with
// Isolated behaviour: every byte of the input lands in exactly one word.
// docs/tokenizer.md explains why it replaces the regex.
type qwenSplitter struct{}

type runeClass uint8

const (
	classOther runeClass = iota // not \s, \p{L}, \p{N}
	classLetter
	classNumber
	classSpace
)

// bmpClass caches classifySlow for the Basic Multilingual Plane, where
// almost all text lives; built on first use.
var (
	bmpClass     [1 << 16]runeClass
	bmpClassOnce sync.Once
)

func buildClassTable() {
	bmpClassOnce.Do(func() {
		for r := range rune(1 << 16) {
			bmpClass[r] = classifySlow(r)
		}
	})
}

func classifySlow(r rune) runeClass {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r): // the White_Space property, as \s in Unicode mode
		return classSpace
	}
	return classOther
}

func classify(r rune) runeClass {
	if r < 1<<16 {
		return bmpClass[r]
	}
	return classifySlow(r)
}

func decodeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func (qwenSplitter) split(s string, dst []string) []string {
	buildClassTable()
	for i := 0; i < len(s); {
		n := qwenMatch(s, i)
		dst = append(dst, s[i:i+n])
		i += n
	}
	return dst
}

// qwenMatch returns the length in bytes of the match of qwen2Pattern at
// s[i:]. Each branch below is one alternative of the pattern, tried in order;
// every rune starts some match, so the result is always positive.
func qwenMatch(s string, i int) int {
	r, w := decodeAt(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if r == '\'' {
		if n := contraction(s[i+1:]); n > 0 {
			return 1 + n
		}
	}
	c := classify(r)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c == classLetter {
		return w + runOf(s, i+w, classLetter)
	}
	if c != classNumber && r != '\r' && r != '\n' && i+w < len(s) {
		if r2, w2 := decodeAt(s, i+w); classify(r2) == classLetter {
			return w + w2 + runOf(s, i+w+w2, classLetter)
		}
	}
	// \p{N}
	if c == classNumber {
		return w
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	start := i
	if r == ' ' && i+1 < len(s) {
		if r2, _ := decodeAt(s, i+1); classify(r2) == classOther {
			start = i + 1
			c = classOther
		}
	}
	if c == classOther {
		j := start + runOf(s, start, classOther)
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j - i
	}
	// c is classSpace from here on. Find the whitespace run [i, j), the
	// start of its last rune and the end of its last \r or \n.
	j, last, afterNL := i, i, -1
	for j < len(s) {
		r, w := decodeAt(s, j)
		if classify(r) != classSpace {
			break
		}
		if r == '\r' || r == '\n' {
			afterNL = j + 1
		}
		last = j
		j += w
	}
	// \s*[\r\n]+ : backtracking \s* stops right before the last newline.
	if afterNL > 0 {
		return afterNL - i
	}
	// \s+(?!\S) : the whole run at the end of the text, else all but its
	// last rune when that leaves at least one.
	if j == len(s) {
		return j - i
	}
	if last > i {
		return last - i
	}
	// \s+
	return j - i
}

// runOf returns the byte length of the run of runes of class c at s[i:].
func runOf(s string, i int, c runeClass) int {
	j := i
	for j < len(s) {
		r, w := decodeAt(s, j)
		if classify(r) != c {
			break
		}
		j += w
	}
	return j - i
}

// contraction matches s|t|re|ve|m|ll|d case-insensitively (with Unicode
// simple case folding, so U+017F LATIN SMALL LETTER LONG S counts as s) at
// the start of s and returns its length in bytes, or 0.
func contraction(s string) int {
	if len(s) == 0 {
		return 0
	}
	lower := func(i int) byte {
		if i < len(s) {
			return s[i] | 0x20 // ASCII letters only; other bytes never match below
		}
		return 0
	}
	switch lower(0) {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if lower(1) == 'e' {
			return 2
		}
	case 'l':
		if lower(1) == 'l' {
			return 2
		}
	}
	if len(s) >= 2 && s[0] == 0xC5 && s[1] == 0xBF { // U+017F
		return 2
	}
	return 0
}

// regexSplitter applies an arbitrary Split pattern with Isolated behaviour:
// matches and the gaps between them both become words.
type regexSplitter struct {
	re *regexp2.Regexp
}

func newRegexSplitter(pattern string) (*regexSplitter, error) {
	re, err := regexp2.Compile(pattern, regexp2.Unicode)
	if err != nil {
		return nil, fmt.Errorf("%w: pre-tokenizer regex %q: %v", ErrUnsupported, pattern, err)
	}
	return &regexSplitter{re: re}, nil
}

func (rs *regexSplitter) split(s string, dst []string) []string {
	runes := []rune(s)
	// regexp2 reports rune offsets; map them back to byte offsets.
	byteAt := make([]int, len(runes)+1)
	off := 0
	for k, r := range runes {
		byteAt[k] = off
		off += utf8.RuneLen(r)
	}
	byteAt[len(runes)] = off
	prev := 0
	m, err := rs.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Index > prev {
			dst = append(dst, s[byteAt[prev]:byteAt[m.Index]])
		}
		if m.Length > 0 {
			dst = append(dst, s[byteAt[m.Index]:byteAt[m.Index+m.Length]])
		}
		prev = m.Index + m.Length
		m, err = rs.re.FindNextMatch(m)
	}
	if prev < len(runes) {
		dst = append(dst, s[byteAt[prev]:])
	}
	return dst
}
