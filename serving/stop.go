package serving

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds on stop strings, so matching stays cheap per token.
const (
	maxStopStrings = 32
	maxStopLen     = 256
)

// stopMatcher finds stop strings in streamed text. It holds back the
// longest tail that may begin a stop string, so no text of a stop string
// is ever emitted, whatever the split of the text into pieces.
type stopMatcher struct {
	stops []string
	held  string
}

func newStopMatcher(stops []string) (*stopMatcher, error) {
	if len(stops) > maxStopStrings {
		return nil, fmt.Errorf("%w: %d stop strings, at most %d", ErrInvalid, len(stops), maxStopStrings)
	}
	for i, s := range stops {
		if s == "" || len(s) > maxStopLen || !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w: stop string %d must be 1 to %d bytes of UTF-8, got %d bytes", ErrInvalid, i, maxStopLen, len(s))
		}
	}
	return &stopMatcher{stops: stops}, nil
}

// push adds text. It returns the text now safe to emit and whether a stop
// string was found; then out is the text before the earliest one, and the
// matcher must not be used again.
func (m *stopMatcher) push(text string) (out string, hit bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	buf := m.held + text
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		m.held = ""
		return buf[:first], true
	}
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the held text (the stream ended without a stop string).
func (m *stopMatcher) flush() string {
	s := m.held
	m.held = ""
	return s
}
