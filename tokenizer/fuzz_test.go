package tokenizer

import (
	"sync"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FuzzEncode: Encode never panics, and for valid UTF-8 decoding its ids
// gives back the NFC form of the input.
func FuzzEncode(f *testing.F) {
	for _, tc := range loadGolden(f).Encode {
		f.Add(tc.Text)
	}
	f.Add("\xff\xfe<|im_end|>\xe4\xbd")
	tok := qwen3T(f)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		if !utf8.ValidString(s) {
			return
		}
		if got, want := tok.Decode(ids), norm.NFC.String(s); got != want {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
	})
}

// FuzzLoad: New never panics on arbitrary tokenizer.json or
// tokenizer_config.json bytes, and a tokenizer it returns works.
func FuzzLoad(f *testing.F) {
	f.Add(tinyJSON(f, nil), []byte(`{"eos_token": "<|end|>", "chat_template": "{{ messages }}"}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}}`), []byte(nil))
	f.Add([]byte(`{"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}`), []byte(`[]`))
	f.Add([]byte(`null`), []byte(`null`))
	f.Fuzz(func(t *testing.T, tokJSON, config []byte) {
		tok, err := New(tokJSON, config)
		if err != nil {
			return
		}
		ids := tok.Encode("hello <|end|> wörld")
		_ = tok.Decode(append(ids, -1, 1<<30))
		_, _ = tok.ApplyChatTemplate([]Message{{Role: "user", Content: "x"}}, TemplateOptions{AddGenerationPrompt: true})
	})
}

// FuzzStreamDecode: streaming any id sequence gives Decode's text.
func FuzzStreamDecode(f *testing.F) {
	f.Add([]byte{0xE4, 0xBD, 0xA0, 'a', 0xF0, 0x9F})
	tok := tiny(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids := make([]int, len(raw))
		for i, b := range raw {
			ids[i] = int(b) // ids 0-255 of tiny are the bytes
		}
		d := tok.NewStreamDecoder()
		var got []byte
		for _, id := range ids {
			piece := d.Push(id)
			if !utf8.ValidString(piece) {
				t.Fatalf("Push gave invalid UTF-8 %q", piece)
			}
			got = append(got, piece...)
		}
		got = append(got, d.Flush()...)
		if want := tok.Decode(ids); string(got) != want {
			t.Errorf("streamed %q, Decode %q", got, want)
		}
	})
}

func TestEncodeConcurrent(t *testing.T) {
	tok := qwen3T(t)
	g := loadGolden(t)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(g.Encode); i += 2 {
				if got := tok.Encode(g.Encode[i].Text); len(got) != len(g.Encode[i].IDs) {
					t.Errorf("case %d: %d ids, want %d", i, len(got), len(g.Encode[i].IDs))
				}
			}
		}()
	}
	wg.Wait()
}
