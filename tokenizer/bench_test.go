package tokenizer

import (
	"strings"
	"testing"
)

// benchText is the golden encode texts joined: mixed English, code, CJK,
// Arabic, emoji and whitespace runs.
func benchText(b *testing.B) string {
	var sb strings.Builder
	for _, tc := range loadGolden(b).Encode {
		sb.WriteString(tc.Text)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// BenchmarkEncode measures Encode throughput with a warm word cache.
func BenchmarkEncode(b *testing.B) {
	tok, text := qwen3T(b), benchText(b)
	tok.Encode(text)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		tok.Encode(text)
	}
}

// BenchmarkEncodeNoCache measures BPE merging itself: every word is new.
func BenchmarkEncodeNoCache(b *testing.B) {
	tok, text := qwen3T(b), benchText(b)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		b.StopTimer()
		tok.model.mu.Lock()
		clear(tok.model.cache)
		tok.model.mu.Unlock()
		b.StartTimer()
		tok.Encode(text)
	}
}

// BenchmarkSplit compares the hand-written Qwen pre-splitter with regexp2
// running the pattern from tokenizer.json.
func BenchmarkSplit(b *testing.B) {
	text := benchText(b)
	re, err := newRegexSplitter(qwen2Pattern)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		s    splitter
	}{{"hand", qwenSplitter{}}, {"regexp2", re}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			var words []string
			for b.Loop() {
				words = bc.s.split(text, words[:0])
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	tok, text := qwen3T(b), benchText(b)
	ids := tok.Encode(text)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Decode(ids)
	}
}

func BenchmarkLoadQwen3(b *testing.B) {
	tj, cj, err := Qwen3Files()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := New(tj, cj); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChatTemplate(b *testing.B) {
	tok := qwen3T(b)
	chat := loadGolden(b).Chat[0]
	for b.Loop() {
		if _, err := tok.ApplyChatTemplate(chat.Messages, TemplateOptions{AddGenerationPrompt: true, EnableThinking: chat.EnableThinking}); err != nil {
			b.Fatal(err)
		}
	}
}
