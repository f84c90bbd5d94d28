package tokenizer

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tinyJSON builds a small byte-level BPE tokenizer.json: ids 0-255 are the
// byte-level alphabet, then the merges below, then the added tokens.
func tinyJSON(t testing.TB, edit func(m map[string]any)) []byte {
	t.Helper()
	vocab := map[string]int{}
	for b := range 256 {
		vocab[string(byteToRune[b])] = b
	}
	merges := [][2]string{{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"a", "a"}}
	for i, m := range merges {
		vocab[m[0]+m[1]] = 256 + i
	}
	added := []map[string]any{
		{"id": 300, "content": "<|end|>", "special": true, "normalized": false},
		{"id": 301, "content": "<|end|>x", "special": true, "normalized": false},
		{"id": 302, "content": "[L]", "lstrip": true, "rstrip": true, "normalized": false},
		{"id": 303, "content": "word", "single_word": true, "normalized": false},
		{"id": 304, "content": "é", "normalized": true}, // NFC form
	}
	m := map[string]any{
		"version":      "1.0",
		"added_tokens": added,
		"normalizer":   map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": qwen2Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
		}},
		"decoder": map[string]any{"type": "ByteLevel"},
		"model":   map[string]any{"type": "BPE", "vocab": vocab, "merges": merges},
	}
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tiny(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := New(tinyJSON(t, nil), []byte(`{"eos_token": {"content": "<|end|>"}, "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ messages[0].content }}!"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEncodeTiny(t *testing.T) {
	tok := tiny(t)
	for _, tc := range []struct {
		name string
		in   string
		want []int
	}{
		{"merges", "hello", []int{259}},
		{"space prefix", "hello world", []int{259, 260, 'o', 'r', 'l', 'd'}},
		{"leftmost equal ranks", "aaa", []int{261, 'a'}},
		{"longest added token", "<|end|>x<|end|>", []int{301, 300}},
		{"lstrip and rstrip", "a [L] b", []int{'a', 302, 'b'}},
		{"single word matches alone", "a word.", []int{'a', ' ', 303, '.'}},
		{"single word not inside a word", "swordfish", []int{'s', 'w', 'o', 'r', 'd', 'f', 'i', 's', 'h'}},
		{"normalized token after NFC", "e\u0301", []int{304}},
		{"invalid UTF-8 becomes U+FFFD", "a\xff", []int{'a', 0xEF, 0xBF, 0xBD}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tok.Encode(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Encode(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestDecodeLossy(t *testing.T) {
	tok := tiny(t)
	ids := func(bs ...byte) []int {
		out := make([]int, len(bs))
		for i, b := range bs {
			out[i] = int(b) // ids 0-255 are the bytes, by construction
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ids  []int
		want string
	}{
		{"ascii", ids('h', 'i'), "hi"},
		{"complete 3-byte", ids(0xE4, 0xBD, 0xA0), "你"},
		{"truncated 3-byte is one U+FFFD", ids(0xE4, 0xBD, 'a'), "\uFFFDa"},
		{"truncated at end", ids('a', 0xE4, 0xBD), "a\uFFFD"},
		{"lone continuation bytes", ids(0x80, 0x80), "\uFFFD\uFFFD"},
		{"overlong lead", ids(0xC0, 0xAF), "\uFFFD\uFFFD"},
		{"surrogate", ids(0xED, 0xA0, 0x80), "\uFFFD\uFFFD\uFFFD"},
		{"bad second byte of E0", ids(0xE0, 0x80, 0x80), "\uFFFD\uFFFD\uFFFD"},
		{"above U+10FFFF", ids(0xF4, 0x90, 0x80, 0x80), "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"4-byte truncated twice", ids(0xF0, 0x9F, 0x98, 0xF0, 0x9F), "\uFFFD\uFFFD"},
		{"added token breaks a sequence", []int{0xE4, 300, 0xBD}, "\uFFFD<|end|>\uFFFD"},
		{"unknown ids are skipped", []int{'a', -1, 999, 'b'}, "ab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tok.Decode(tc.ids)); diff != "" {
				t.Errorf("Decode(%v) (-want +got):\n%s", tc.ids, diff)
			}
			d := tok.NewStreamDecoder()
			var got strings.Builder
			for _, id := range tc.ids {
				piece := d.Push(id)
				if strings.ContainsRune(piece, '\uFFFD') && !strings.ContainsRune(tc.want, '\uFFFD') {
					t.Errorf("Push(%d) = %q splits a character", id, piece)
				}
				got.WriteString(piece)
			}
			got.WriteString(d.Flush())
			if diff := cmp.Diff(tc.want, got.String()); diff != "" {
				t.Errorf("streamed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStreamDecoderHoldsPartialCharacters(t *testing.T) {
	tok := tiny(t)
	d := tok.NewStreamDecoder()
	var got []string
	for _, id := range []int{'a', 0xF0, 0x9F, 0x98, 0x80, 'b'} {
		got = append(got, d.Push(id))
	}
	got = append(got, d.Flush())
	want := []string{"a", "", "", "", "😀", "b", ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pieces (-want +got):\n%s", diff)
	}
}

func TestCheckIDs(t *testing.T) {
	tok := tiny(t)
	for _, tc := range []struct {
		ids     []int
		wantErr error
	}{
		{[]int{0, 255, 300, 304}, nil},
		{[]int{0, -1}, ErrIDOutOfRange},
		{[]int{305}, ErrIDOutOfRange},
		{[]int{280}, ErrIDOutOfRange}, // a gap between model and added ids
	} {
		if err := tok.CheckIDs(tc.ids); !errors.Is(err, tc.wantErr) {
			t.Errorf("CheckIDs(%v) = %v, want %v", tc.ids, err, tc.wantErr)
		}
	}
}

func TestLookups(t *testing.T) {
	tok := tiny(t)
	type lookup struct {
		ID int
		OK bool
	}
	for _, tc := range []struct {
		s    string
		want lookup
	}{
		{"hello", lookup{259, true}},
		{" w", lookup{260, true}},
		{"<|end|>", lookup{300, true}},
		{"nope", lookup{0, false}},
	} {
		id, ok := tok.TokenID(tc.s)
		if diff := cmp.Diff(tc.want, lookup{id, ok}); diff != "" {
			t.Errorf("TokenID(%q) (-want +got):\n%s", tc.s, diff)
		}
	}
	if got, want := tok.VocabSize(), 305; got != want {
		t.Errorf("VocabSize() = %d, want %d", got, want)
	}
	if diff := cmp.Diff([]int{300}, tok.EOSIDs()); diff != "" {
		t.Errorf("EOSIDs (-want +got):\n%s", diff)
	}
	if s, ok := tok.Token(260); !ok || s != "Ġw" {
		t.Errorf("Token(260) = %q, %v; want \"Ġw\", true", s, ok)
	}
	if !tok.IsSpecial(300) || tok.IsSpecial(302) || tok.IsSpecial(5) {
		t.Error("IsSpecial: want only 300 special among 300, 302, 5")
	}
	out, err := tok.ApplyChatTemplate([]Message{{Role: "user", Content: "hey"}}, TemplateOptions{})
	if err != nil || out != "hey!" {
		t.Errorf("default named template: got %q, %v; want \"hey!\"", out, err)
	}
}

func TestQwen3Lookups(t *testing.T) {
	tok := qwen3T(t)
	if diff := cmp.Diff([]int{151645, 151643}, tok.EOSIDs()); diff != "" {
		t.Errorf("EOSIDs (-want +got):\n%s", diff)
	}
	if got, want := tok.VocabSize(), 151669; got != want {
		t.Errorf("VocabSize() = %d, want %d", got, want)
	}
	for s, want := range map[string]int{"<|im_start|>": 151644, "<think>": 151667, "Hello": 9707, " world": 1879} {
		if id, ok := tok.TokenID(s); !ok || id != want {
			t.Errorf("TokenID(%q) = %d, %v; want %d", s, id, ok, want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	set := func(path []string, v any) func(m map[string]any) {
		return func(m map[string]any) {
			for _, k := range path[:len(path)-1] {
				m = m[k].(map[string]any)
			}
			m[path[len(path)-1]] = v
		}
	}
	for _, tc := range []struct {
		name    string
		tokJSON []byte
		config  string
		wantErr error
	}{
		{"not JSON", []byte("{"), "", ErrInvalidJSON},
		{"no model", []byte(`{"added_tokens": []}`), "", ErrInvalidJSON},
		{"unknown model type", tinyJSON(t, set([]string{"model", "type"}, "WordPiece")), "", ErrUnsupported},
		{"unigram", tinyJSON(t, set([]string{"model", "type"}, "Unigram")), "", ErrUnsupported},
		{"normalizer", tinyJSON(t, set([]string{"normalizer"}, map[string]any{"type": "Lowercase"})), "", ErrUnsupported},
		{"no pre-tokenizer", tinyJSON(t, set([]string{"pre_tokenizer"}, nil)), "", ErrUnsupported},
		{"bad regex", tinyJSON(t, set([]string{"pre_tokenizer"}, map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "("}, "behavior": "Isolated"},
			map[string]any{"type": "ByteLevel", "use_regex": false},
		}})), "", ErrUnsupported},
		{"decoder", tinyJSON(t, set([]string{"decoder"}, map[string]any{"type": "WordPiece"})), "", ErrUnsupported},
		{"dropout", tinyJSON(t, set([]string{"model", "dropout"}, 0.1)), "", ErrUnsupported},
		{"missing byte token", tinyJSON(t, set([]string{"model", "vocab"}, map[string]any{"a": 0})), "", ErrUnsupported},
		{"negative id", tinyJSON(t, set([]string{"model", "vocab"}, map[string]any{"a": -1})), "", ErrInvalidJSON},
		{"merge of unknown token", tinyJSON(t, set([]string{"model", "merges"}, []string{"q zz"})), "", ErrInvalidJSON},
		{"merge not a pair", tinyJSON(t, set([]string{"model", "merges"}, []string{"abc"})), "", ErrInvalidJSON},
		{"bad config", tinyJSON(t, nil), "[", ErrInvalidJSON},
		{"bad eos_token", tinyJSON(t, nil), `{"eos_token": 5}`, ErrInvalidJSON},
		{"bad template", tinyJSON(t, nil), `{"chat_template": "{% if %}"}`, ErrTemplate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := New(tc.tokJSON, []byte(tc.config))
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("New: err %v, want %v", err, tc.wantErr)
			}
			if tok != nil {
				t.Error("New returned a tokenizer with an error")
			}
		})
	}
}

func TestMergesAsStrings(t *testing.T) {
	tok, err := New(tinyJSON(t, func(m map[string]any) {
		m["model"].(map[string]any)["merges"] = []string{"h e", "l l", "he ll", "hell o", "Ġ w", "a a"}
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{259}, tok.Encode("hello")); diff != "" {
		t.Errorf("Encode (-want +got):\n%s", diff)
	}
}

func TestTemplateErrors(t *testing.T) {
	tok, err := New(tinyJSON(t, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.ApplyChatTemplate(nil, TemplateOptions{}); !errors.Is(err, ErrNoChatTemplate) {
		t.Errorf("no template: err %v, want ErrNoChatTemplate", err)
	}
	tok, err = New(tinyJSON(t, nil), []byte(`{"chat_template": "{{ raise_exception('no') }}"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.ApplyChatTemplate(nil, TemplateOptions{}); !errors.Is(err, ErrTemplate) {
		t.Errorf("raising template: err %v, want ErrTemplate", err)
	}
}

func TestChatTemplateToolsAndReasoning(t *testing.T) {
	tok := qwen3T(t)
	msgs := []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", Content: "", ReasoningContent: "Need the tool.", ToolCalls: []ToolCall{
			{Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris", "unit": "C"}`)}},
		}},
		{Role: "tool", Content: `{"temp": 21}`},
	}
	tools := []json.RawMessage{json.RawMessage(`{"type": "function", "function": {"name": "get_weather", "description": "Weather in <city> & region", "parameters": {"type": "object"}}}`)}
	got, err := tok.ApplyChatTemplate(msgs, TemplateOptions{AddGenerationPrompt: true, Tools: tools})
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
		`{"type": "function", "function": {"name": "get_weather", "description": "Weather in <city> & region", "parameters": {"type": "object"}}}` +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
		"<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
		"<|im_start|>assistant\n<think>\nNeed the tool.\n</think>\n\n" +
		"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"C\"}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n" +
		"<|im_start|>assistant\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prompt (-want +got):\n%s", diff)
	}
}
