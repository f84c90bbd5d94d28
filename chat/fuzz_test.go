package chat

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParser encodes arbitrary text (marker strings become their ids) and
// checks that the parser never panics, that its deltas hold valid UTF-8 and
// valid JSON arguments, and that feeding the ids one by one gives what a
// reference gets from the same ids with each run of plain text decoded in
// one piece: holding back split characters and white space must not change
// the result, wherever the token boundaries fall.
func FuzzParser(f *testing.F) {
	for _, s := range []string{
		"<think>\nhm\n</think>\n\nIt is 4.<|im_end|>",
		"plan</think>\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, 2.0]}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call><|im_end|>",
		"Sure. <tool_call>{\"name\": \"a\", \"arguments\": {oops}}</tool_call> \n more",
		"<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n",
		"é😀 \t\n<think><think></think></think><tool_call></tool_call></tool_call>",
		"\xff\xc3<|endoftext|>\xa9",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	tok := qwen3(f)
	markers := map[int32]bool{}
	for _, m := range []string{thinkStart, thinkEnd, toolStart, toolEnd} {
		id, _ := tok.TokenID(m)
		markers[int32(id)] = true
	}
	f.Fuzz(func(t *testing.T, s string, thinking bool) {
		ids := ids32(tok.Encode(s))
		got := Parse(tok, thinking, ids)

		ref := NewParser(tok, thinking)
		var want Delta
		var run []int
		flushRun := func() {
			if len(run) > 0 {
				ref.out = Delta{}
				ref.text(tok.Decode(run))
				want.Append(ref.take())
				run = run[:0]
			}
		}
		for _, id := range ids {
			if markers[id] || tok.IsSpecial(int(id)) {
				flushRun()
				want.Append(ref.Push(id))
				continue
			}
			run = append(run, int(id))
		}
		flushRun()
		want.Append(ref.Flush())

		if diff := cmp.Diff(want, got, ignoreCallID, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("streamed parse differs from one-shot (-want +got):\n%s", diff)
		}
		if !utf8.ValidString(got.Content) || !utf8.ValidString(got.Reasoning) {
			t.Errorf("invalid UTF-8 in %+v", got)
		}
		for _, c := range got.ToolCalls {
			if c.Name == "" || !json.Valid([]byte(c.Arguments)) {
				t.Errorf("bad tool call %+v", c)
			}
		}
	})
}
