package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	id         int
	content    string
	lstrip     bool // also consume whitespace to the left
	rstrip     bool // also consume whitespace to the right
	singleWord bool // match only between non-word characters
	special    bool
}

// addedMatcher finds added tokens in text, leftmost first and longest first
// at a position, as Hugging Face's AddedVocabulary does.
type addedMatcher struct {
	byFirst [256][]addedToken // candidates by first byte, longest first
	any     bool
	// firstByte is the first byte of every token when they all share one
	// ('<' for Qwen3), so that scanning can use strings.IndexByte.
	firstByte int
}

func (m *addedMatcher) add(a addedToken) {
	m.byFirst[a.content[0]] = append(m.byFirst[a.content[0]], a)
	m.any = true
}

func (m *addedMatcher) finish() {
	m.firstByte = -1
	for i := range m.byFirst {
		if len(m.byFirst[i]) > 0 {
			if m.firstByte == -1 {
				m.firstByte = i
			} else {
				m.firstByte = -2 // several
			}
		}
	}
	for i := range m.byFirst {
		c := m.byFirst[i]
		sort.SliceStable(c, func(a, b int) bool { return len(c[a].content) > len(c[b].content) })
	}
}

// segment is a piece of the input: literal text (id < 0) or an added token.
type segment struct {
	text string
	id   int
}

// split cuts s into text segments and added-token segments, appending to dst.
func (m *addedMatcher) split(s string, dst []segment) []segment {
	if !m.any {
		return append(dst, segment{text: s, id: -1})
	}
	textStart := 0
	for i := 0; i < len(s); {
		if m.firstByte >= 0 {
			k := strings.IndexByte(s[i:], byte(m.firstByte))
			if k < 0 {
				break
			}
			i += k
		}
		a, ok := m.matchAt(s, i)
		if !ok {
			i++
			continue
		}
		start, end := i, i+len(a.content)
		if a.lstrip {
			for start > textStart {
				r, w := utf8.DecodeLastRuneInString(s[textStart:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= w
			}
		}
		if a.rstrip {
			for end < len(s) {
				r, w := utf8.DecodeRuneInString(s[end:])
				if !unicode.IsSpace(r) {
					break
				}
				end += w
			}
		}
		if start > textStart {
			dst = append(dst, segment{text: s[textStart:start], id: -1})
		}
		dst = append(dst, segment{text: s[start:end], id: a.id})
		textStart, i = end, end
	}
	if textStart < len(s) {
		dst = append(dst, segment{text: s[textStart:], id: -1})
	}
	return dst
}

func (m *addedMatcher) matchAt(s string, i int) (addedToken, bool) {
	for _, a := range m.byFirst[s[i]] {
		if !strings.HasPrefix(s[i:], a.content) {
			continue
		}
		if a.singleWord && !isWordBoundary(s, i, i+len(a.content)) {
			return addedToken{}, false
		}
		return a, true
	}
	return addedToken{}, false
}

// isWordBoundary reports whether s[start:end] has no word character
// (letter, number or '_') right before or right after it.
func isWordBoundary(s string, start, end int) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }
	if start > 0 {
		if r, _ := utf8.DecodeLastRuneInString(s[:start]); isWord(r) {
			return false
		}
	}
	if end < len(s) {
		if r, _ := utf8.DecodeRuneInString(s[end:]); isWord(r) {
			return false
		}
	}
	return true
}
