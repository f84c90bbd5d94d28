package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/tokenizer"
)

func TestRenderGolden(t *testing.T) {
	tok := qwen3(t)
	for _, file := range []string{"golden-public.json", "golden-tools.json"} {
		chats := loadGoldenChats(t, file)
		rendered := 0
		for i, g := range chats {
			c, ok := g.conversation(t)
			if !ok {
				continue
			}
			rendered++
			t.Run(fmt.Sprintf("%s/%d", file, i), func(t *testing.T) {
				p, err := Render(tok, c)
				if err != nil {
					t.Fatalf("Render: %v", err)
				}
				wantText, wantIDs, thinking := expectRender(tok, g, c)
				if diff := cmp.Diff(wantText, p.Text); diff != "" {
					t.Errorf("prompt (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(wantIDs, p.IDs); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
				if p.Thinking != thinking {
					t.Errorf("Thinking = %v, want %v", p.Thinking, thinking)
				}
			})
		}
		// Most chats must be covered, or the conversion is broken (16 of
		// golden-tools' chats have arguments as JSON strings).
		if rendered < len(chats)/2 {
			t.Errorf("%s: rendered %d of %d chats", file, rendered, len(chats))
		}
	}
}

// expectRender is what Render must give for a golden chat. The goldens are
// the template alone; Render differs only where a trailing /no_think
// switches off thinking that the request left on: the prompt then gains the
// empty think block that enable_thinking=false renders.
func expectRender(tok *tokenizer.Tokenizer, g goldenChat, c Conversation) (string, []int32, bool) {
	thinking := g.EnableThinking == nil || *g.EnableThinking
	if thinking && lastUserSwitch(c) == switchNoThink {
		text := g.Prompt + "<think>\n\n</think>\n\n"
		return text, ids32(tok.Encode(text)), false
	}
	return g.Prompt, g.IDs, thinking
}

func lastUserSwitch(c Conversation) string {
	for i := len(c.Messages) - 1; i >= 0; i-- {
		if c.Messages[i].Role == "user" {
			return softSwitch(c.Messages[i].Content)
		}
	}
	return ""
}

// TestRenderToolCallRoundTrip parses each assistant tool call of
// golden-tools.json back from its rendered form, as the model would write
// it, and checks that the conversation rebuilt from the parsed calls renders
// the golden prompt again.
func TestRenderToolCallRoundTrip(t *testing.T) {
	tok := qwen3(t)
	calls := 0
	for i, g := range loadGoldenChats(t, "golden-tools.json") {
		c, ok := g.conversation(t)
		if !ok {
			continue
		}
		for mi := range c.Messages {
			m := &c.Messages[mi]
			if len(m.ToolCalls) == 0 {
				continue
			}
			var reply strings.Builder
			for _, tc := range m.ToolCalls {
				args := tc.Arguments
				if args == "" {
					args = "{}"
				}
				fmt.Fprintf(&reply, "<tool_call>\n{\"name\": %q, \"arguments\": %s}\n</tool_call>\n", tc.Name, args)
			}
			reply.WriteString("<|im_end|>")
			d := Parse(tok, false, ids32(tok.Encode(reply.String())))
			if d.Content != "" || d.Reasoning != "" || len(d.ToolCalls) != len(m.ToolCalls) {
				t.Fatalf("chat %d message %d: parsed %+v from %q", i, mi, d, reply.String())
			}
			for j := range d.ToolCalls {
				if d.ToolCalls[j].Name != m.ToolCalls[j].Name || compactJSON(t, d.ToolCalls[j].Arguments) != compactJSON(t, m.ToolCalls[j].Arguments) {
					t.Errorf("chat %d message %d call %d: parsed %+v, want %+v", i, mi, j, d.ToolCalls[j], m.ToolCalls[j])
				}
			}
			m.ToolCalls = d.ToolCalls
			calls += len(d.ToolCalls)
		}
		p, err := Render(tok, c)
		if err != nil {
			t.Fatalf("chat %d: Render: %v", i, err)
		}
		want, _, _ := expectRender(tok, g, c)
		if diff := cmp.Diff(want, p.Text); diff != "" {
			t.Errorf("chat %d: prompt after round trip (-want +got):\n%s", i, diff)
		}
	}
	if calls < 15 {
		t.Errorf("only %d tool calls round-tripped", calls)
	}
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	if s == "" {
		s = "{}"
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %q", s)
	}
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderSoftSwitch(t *testing.T) {
	tok := qwen3(t)
	on, off := true, false
	user := func(s string) Message { return Message{Role: "user", Content: s} }
	for _, tc := range []struct {
		name     string
		msgs     []Message
		enable   *bool
		want     *bool // enable_thinking the render must equal
		thinking bool
	}{
		{"no switch", []Message{user("hi")}, nil, nil, true},
		{"no_think", []Message{user("hi /no_think")}, nil, &off, false},
		{"no_think alone", []Message{user("/no_think")}, nil, &off, false},
		{"no_think trailing space", []Message{user("hi /no_think \n")}, nil, &off, false},
		{"no_think over enable true", []Message{user("hi /no_think")}, &on, &off, false},
		{"think over unset", []Message{user("hi /think")}, nil, &on, true},
		{"think does not override false", []Message{user("hi /think")}, &off, &off, false},
		{"tag not standalone", []Message{user("see a/no_think")}, nil, nil, true},
		{"tag inside text", []Message{user("/no_think then more")}, nil, nil, true},
		{"earlier turn only", []Message{user("a /no_think"), {Role: "assistant", Content: "b"}, user("c")}, nil, nil, true},
		{"last turn wins", []Message{user("a /no_think"), {Role: "assistant", Content: "b"}, user("c /think")}, nil, &on, true},
		{"through a tool loop", []Message{
			user("weather? /no_think"),
			{Role: "assistant", ToolCalls: []ToolCall{{Name: "get_weather", Arguments: `{"city": "Bern"}`}}},
			{Role: "tool", Content: "sunny"},
		}, nil, &off, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Render(tok, Conversation{Messages: tc.msgs, EnableThinking: tc.enable, AddGenerationPrompt: true})
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := convert(tc.msgs)
			if err != nil {
				t.Fatal(err)
			}
			want, err := tok.ApplyChatTemplate(msgs, tokenizer.TemplateOptions{AddGenerationPrompt: true, EnableThinking: tc.want})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, p.Text); diff != "" {
				t.Errorf("prompt (-want +got):\n%s", diff)
			}
			if got := strings.HasSuffix(p.Text, "<|im_start|>assistant\n<think>\n\n</think>\n\n"); got == tc.thinking {
				t.Errorf("empty think block present = %v, want %v", got, !tc.thinking)
			}
			if p.Thinking != tc.thinking {
				t.Errorf("Thinking = %v, want %v", p.Thinking, tc.thinking)
			}
			if diff := cmp.Diff(ids32(tok.Encode(p.Text)), p.IDs); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderNoGenerationPrompt(t *testing.T) {
	p, err := Render(qwen3(t), Conversation{Messages: []Message{{Role: "user", Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Thinking || p.Text != "<|im_start|>user\nhi<|im_end|>\n" {
		t.Errorf("got %+v", p)
	}
}

func TestRenderInvalid(t *testing.T) {
	tok := qwen3(t)
	user := []Message{{Role: "user", Content: "hi"}}
	call := func(tc ToolCall) []Message {
		return []Message{{Role: "user", Content: "hi"}, {Role: "assistant", ToolCalls: []ToolCall{tc}}}
	}
	for _, tc := range []struct {
		name string
		c    Conversation
	}{
		{"empty message list", Conversation{}},
		{"unknown role", Conversation{Messages: []Message{{Role: "developer", Content: "x"}}}},
		{"empty role", Conversation{Messages: []Message{{Content: "x"}}}},
		{"invalid UTF-8 content", Conversation{Messages: []Message{{Role: "user", Content: "a\xffb"}}}},
		{"invalid UTF-8 reasoning", Conversation{Messages: []Message{{Role: "assistant", ReasoningContent: "\xc3"}}}},
		{"invalid UTF-8 tool_call_id", Conversation{Messages: []Message{{Role: "tool", ToolCallID: "\xff"}}}},
		{"tool calls on a user turn", Conversation{Messages: []Message{{Role: "user", ToolCalls: []ToolCall{{Name: "f"}}}}}},
		{"arguments not JSON", Conversation{Messages: call(ToolCall{Name: "f", Arguments: "{city: Bern}"})}},
		{"arguments truncated", Conversation{Messages: call(ToolCall{Name: "f", Arguments: `{"a": 1`})}},
		{"arguments invalid UTF-8", Conversation{Messages: call(ToolCall{Name: "f", Arguments: "{\"a\": \"\xff\"}"})}},
		{"call without name", Conversation{Messages: call(ToolCall{Arguments: "{}"})}},
		{"tool not an object", Conversation{Messages: user, Tools: []json.RawMessage{json.RawMessage(`[1]`)}}},
		{"tool a string", Conversation{Messages: user, Tools: []json.RawMessage{json.RawMessage(`"get_weather"`)}}},
		{"tool not JSON", Conversation{Messages: user, Tools: []json.RawMessage{json.RawMessage(`{"type": function}`)}}},
		{"tool empty", Conversation{Messages: user, Tools: []json.RawMessage{nil}}},
		{"tool invalid UTF-8", Conversation{Messages: user, Tools: []json.RawMessage{json.RawMessage("{\"d\": \"\xff\"}")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tok, tc.c)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Render: %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Render(nil, Conversation{Messages: user}); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil tokenizer: %v, want ErrInvalid", err)
	}
}

func TestRenderToolsKeepNumbersAndKeyOrder(t *testing.T) {
	tool := `{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"z": {"type": "integer", "maximum": 9007199254740993}, "a": {"type": "number", "default": 2.5, "minimum": 0.0, "maximum": 100.0, "multipleOf": 0.0001}}}}}`
	p, err := Render(qwen3(t), Conversation{
		Messages:            []Message{{Role: "user", Content: "hi"}},
		Tools:               []json.RawMessage{json.RawMessage(tool)},
		AddGenerationPrompt: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Text, "<tools>\n"+tool+"\n</tools>") {
		t.Errorf("tool not rendered as written:\n%s", p.Text)
	}
}
