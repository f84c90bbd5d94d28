package chat

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var ignoreCallID = cmpopts.IgnoreFields(ToolCall{}, "ID")

func TestParser(t *testing.T) {
	tok := qwen3(t)
	call := func(name, args string) ToolCall { return ToolCall{Name: name, Arguments: args} }
	for _, tc := range []struct {
		name     string
		reply    string // encoded with the tokenizer: marker strings become their ids
		thinking bool
		want     Delta
	}{
		{"content only", "Hello there.<|im_end|>", false, Delta{Content: "Hello there."}},
		{"thinking without <think>", "let me see\n</think>\n\nIt is 4.<|im_end|>", true,
			Delta{Reasoning: "let me see\n", Content: "\n\nIt is 4."}},
		{"thinking with <think>", "<think>\nlet me see\n</think>\n\nIt is 4.<|im_end|>", true,
			Delta{Reasoning: "\nlet me see\n", Content: "\n\nIt is 4."}},
		{"thinking off: think tags still split", "<think>\nhm\n</think>\n\nok", false,
			Delta{Reasoning: "\nhm\n", Content: "\n\nok"}},
		{"thinking never closed", "still thinking", true, Delta{Reasoning: "still thinking"}},
		{"empty think block of enable_thinking=false", "Answer.<|endoftext|>", false, Delta{Content: "Answer."}},
		{"stray </think> in content dropped", "a</think>b", false, Delta{Content: "ab"}},
		{"one tool call", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\"}}\n</tool_call><|im_end|>", false,
			Delta{ToolCalls: []ToolCall{call("get_weather", `{"city": "Zürich"}`)}}},
		{"arguments kept as written", "<tool_call>\n{\"arguments\":{\"b\":1.0,\"a\":[2, 3]},\"name\":\"f\"}\n</tool_call>", false,
			Delta{ToolCalls: []ToolCall{call("f", `{"b":1.0,"a":[2, 3]}`)}}},
		{"two tool calls after thinking", "plan\n</think>\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>", true,
			Delta{Reasoning: "plan\n", ToolCalls: []ToolCall{call("a", "{}"), call("b", `{"x": 1}`)}}},
		{"content then tool call", "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\nDone.", false,
			Delta{Content: "Let me check.Done.", ToolCalls: []ToolCall{call("a", "{}")}}},
		{"invalid JSON stays content", "x <tool_call>\n{\"name\": \"a\", \"arguments\": {oops}}\n</tool_call>", false,
			Delta{Content: "x <tool_call>\n{\"name\": \"a\", \"arguments\": {oops}}\n</tool_call>"}},
		{"missing name stays content", "<tool_call>{\"arguments\": {}}</tool_call>", false,
			Delta{Content: "<tool_call>{\"arguments\": {}}</tool_call>"}},
		{"arguments not an object stays content", "<tool_call>{\"name\": \"a\", \"arguments\": \"{}\"}</tool_call>", false,
			Delta{Content: "<tool_call>{\"name\": \"a\", \"arguments\": \"{}\"}</tool_call>"}},
		{"tool call inside reasoning is reasoning", "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call></think>ok", true,
			Delta{Reasoning: "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>", Content: "ok"}},
		{"unclosed valid block at the end", "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n", false,
			Delta{ToolCalls: []ToolCall{call("a", "{}")}}},
		{"unclosed cut block at the end", "<tool_call>\n{\"name\": \"a\", \"argu", false,
			Delta{Content: "<tool_call>\n{\"name\": \"a\", \"argu"}},
		{"stray </tool_call> is content", "a</tool_call>", false, Delta{Content: "a</tool_call>"}},
		{"trailing white space kept without calls", "a \n", false, Delta{Content: "a \n"}},
		{"special tokens give no text", "a<|im_start|>b<|im_end|>", false, Delta{Content: "ab"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids := ids32(tok.Encode(tc.reply))
			got := Parse(tok, tc.thinking, ids)
			if diff := cmp.Diff(tc.want, got, ignoreCallID, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.reply, diff)
			}
			for _, c := range got.ToolCalls {
				if !strings.HasPrefix(c.ID, "call_") || len(c.ID) < 20 {
					t.Errorf("tool call id %q", c.ID)
				}
			}
			p := NewParser(tok, tc.thinking)
			for _, id := range ids {
				p.Push(id)
			}
			p.Flush()
			if p.ToolCalled() != (len(tc.want.ToolCalls) > 0) {
				t.Errorf("ToolCalled() = %v", p.ToolCalled())
			}
		})
	}
}

// TestParserStreaming checks when things come out: a tool call whole at
// its closing tag, nothing before, and text as soon as it is complete.
func TestParserStreaming(t *testing.T) {
	tok := qwen3(t)
	reply := "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}\n</tool_call><|im_end|>"
	ids := ids32(tok.Encode(reply))
	end, _ := tok.TokenID("</tool_call>")
	p := NewParser(tok, false)
	var seen []string
	for i, id := range ids {
		d := p.Push(id)
		if len(d.ToolCalls) > 0 {
			if int(id) != end {
				t.Errorf("tool call emitted at token %d (%d), not at </tool_call>", i, id)
			}
			seen = append(seen, d.ToolCalls[0].Name)
		}
		if i == 0 && d.Content != "Sure" {
			t.Errorf("first delta %+v, want the text at once", d)
		}
	}
	if d := p.Flush(); !d.IsEmpty() {
		t.Errorf("Flush = %+v, want nothing", d)
	}
	if diff := cmp.Diff([]string{"get_weather"}, seen); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestParserSplitUTF8 feeds a character split over byte tokens: no delta
// may hold a broken character, and the text must come out whole.
func TestParserSplitUTF8(t *testing.T) {
	tok := qwen3(t)
	var ids []int32
	for _, b := range []byte("é😀") {
		id, ok := tok.TokenID(string([]byte{b})) // the token of one byte
		if !ok {
			t.Fatalf("no byte token for %#x", b)
		}
		ids = append(ids, int32(id))
	}
	for _, thinking := range []bool{false, true} {
		p := NewParser(tok, thinking)
		var all Delta
		for _, id := range ids {
			d := p.Push(id)
			if !utf8.ValidString(d.Content) || !utf8.ValidString(d.Reasoning) || strings.ContainsRune(d.Content+d.Reasoning, utf8.RuneError) {
				t.Errorf("delta %+v splits a character", d)
			}
			all.Append(d)
		}
		all.Append(p.Flush())
		if got := all.Content + all.Reasoning; got != "é😀" {
			t.Errorf("thinking=%v: got %q", thinking, got)
		}
	}
	// A character cut by the end of the reply becomes U+FFFD.
	p := NewParser(tok, false)
	p.Push(ids[2])
	if d := p.Flush(); d.Content != "\uFFFD" {
		t.Errorf("Flush of a cut character = %+v", d)
	}
}

func TestParserOtherIDs(t *testing.T) {
	tok := qwen3(t)
	p := NewParser(tok, false)
	var all Delta
	for _, id := range []int32{-1, 1 << 30, int32(tok.VocabSize()), 9707} {
		all.Append(p.Push(id))
	}
	all.Append(p.Flush())
	if want := tok.Decode([]int{9707}); all.Content != want {
		t.Errorf("got %+v, want content %q (unknown ids skipped)", all, want)
	}
}

func TestParserBudget(t *testing.T) {
	tok := qwen3(t)
	ids := ids32(tok.Encode("<think>\nLong thought"))
	insert, end, err := BudgetInsert(tok)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, insert...)
	ids = append(ids, ids32(tok.Encode("The answer is 4.<|im_end|>"))...)
	got := Parse(tok, true, ids)
	want := Delta{
		Reasoning: "\nLong thoughtConsidering the limited time by the user, I have to give the solution based on the thinking directly now.\n",
		Content:   ".\n\nThe answer is 4.",
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if id, _ := tok.TokenID("</think>"); int32(id) != end {
		t.Errorf("end id %d, want %d", end, id)
	}
}
