package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/moemesh/moemesh/tokenizer"
)

// Message is one turn of a conversation.
type Message struct {
	// Role is "system", "user", "assistant" or "tool".
	Role string
	// Content is the text of the turn.
	Content string
	// ReasoningContent is an assistant turn's thinking kept apart from
	// Content; empty means absent (the template then looks for a
	// <think>...</think> block in Content). The Qwen3 template prints it
	// only for assistant turns after the last user query.
	ReasoningContent string
	// ToolCalls are the calls an assistant turn made.
	ToolCalls []ToolCall
	// ToolCallID is the call a tool turn answers; Name the function it ran.
	// The Qwen3 template prints neither (tool results are matched by
	// order), other templates may.
	ToolCallID, Name string
}

// ToolCall is one function call of an assistant turn.
type ToolCall struct {
	// ID identifies the call ("call_..."); the Qwen3 template ignores it.
	ID string
	// Name is the function name.
	Name string
	// Arguments is the JSON text of the arguments, as written (usually an
	// object). Render decodes it and the template re-encodes it with its
	// tojson, as vLLM does; empty means {}.
	Arguments string
}

// Conversation is what a chat request renders.
type Conversation struct {
	Messages []Message
	// Tools are tool definitions (OpenAI's {"type": "function",
	// "function": {...}}), each a JSON object, rendered with their keys in
	// the order given and integers as written.
	Tools []json.RawMessage
	// EnableThinking is the template variable enable_thinking; nil leaves
	// the template's default (thinking on for Qwen3). false is a hard
	// switch: /think in the last user turn does not override it.
	EnableThinking *bool
	// AddGenerationPrompt ends the prompt with the opening of an assistant
	// turn (what a chat completion wants).
	AddGenerationPrompt bool
}

// Prompt is a rendered conversation.
type Prompt struct {
	// Text is the prompt text, IDs its tokens.
	Text string
	IDs  []int32
	// Thinking says whether generation starts inside a thinking phase: the
	// model is expected to write <think> ... </think> first. False when
	// thinking was switched off (enable_thinking=false or a trailing
	// /no_think), which makes the template emit the empty think block, and
	// when there is no generation prompt. Pass it to NewParser.
	Thinking bool
}

// Soft switches a user may end the last user turn with (QWEN3.md).
const (
	switchThink   = "/think"
	switchNoThink = "/no_think"
)

// Render validates c and renders it with tok's chat template.
//
// Thinking mode: the effective enable_thinking is c.EnableThinking, except
// that when it is not false, a last user turn (the last message with role
// "user") whose text ends with "/no_think" renders as enable_thinking=false
// and one ending with "/think" as enable_thinking=true. The tag must stand
// alone (at the start of the text or after white space); trailing white
// space is ignored; the user's text keeps the tag.
func Render(tok *tokenizer.Tokenizer, c Conversation) (Prompt, error) {
	if tok == nil {
		return Prompt{}, fmt.Errorf("%w: no tokenizer", ErrInvalid)
	}
	msgs, err := convert(c.Messages)
	if err != nil {
		return Prompt{}, err
	}
	if err := checkTools(c.Tools); err != nil {
		return Prompt{}, err
	}
	thinking := effectiveThinking(c)
	text, err := tok.ApplyChatTemplate(msgs, tokenizer.TemplateOptions{
		AddGenerationPrompt: c.AddGenerationPrompt,
		EnableThinking:      thinking,
		Tools:               c.Tools,
	})
	if err != nil {
		return Prompt{}, fmt.Errorf("chat: render: %w", err)
	}
	ids := tok.Encode(text)
	p := Prompt{Text: text, IDs: make([]int32, len(ids))}
	for i, id := range ids {
		p.IDs[i] = int32(id)
	}
	p.Thinking = c.AddGenerationPrompt && (thinking == nil || *thinking)
	return p, nil
}

// effectiveThinking applies the soft switch of the last user turn.
func effectiveThinking(c Conversation) *bool {
	if c.EnableThinking != nil && !*c.EnableThinking {
		return c.EnableThinking
	}
	for i := len(c.Messages) - 1; i >= 0; i-- {
		if c.Messages[i].Role != "user" {
			continue
		}
		switch softSwitch(c.Messages[i].Content) {
		case switchNoThink:
			off := false
			return &off
		case switchThink:
			on := true
			return &on
		}
		break
	}
	return c.EnableThinking
}

// softSwitch returns the tag text ends with, or "".
func softSwitch(text string) string {
	text = strings.TrimRightFunc(text, unicode.IsSpace)
	for _, tag := range []string{switchNoThink, switchThink} {
		rest, ok := strings.CutSuffix(text, tag)
		if !ok {
			continue
		}
		if r, _ := utf8.DecodeLastRuneInString(rest); rest == "" || unicode.IsSpace(r) {
			return tag
		}
	}
	return ""
}

var roles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// convert validates messages and turns them into the tokenizer's shape.
func convert(in []Message) ([]tokenizer.Message, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("%w: empty message list", ErrInvalid)
	}
	out := make([]tokenizer.Message, len(in))
	for i, m := range in {
		if !roles[m.Role] {
			return nil, fmt.Errorf("%w: messages[%d].role %q is not system, user, assistant or tool", ErrInvalid, i, m.Role)
		}
		for _, f := range []struct{ name, s string }{
			{"role", m.Role}, {"content", m.Content}, {"reasoning_content", m.ReasoningContent},
			{"tool_call_id", m.ToolCallID}, {"name", m.Name},
		} {
			if !utf8.ValidString(f.s) {
				return nil, fmt.Errorf("%w: messages[%d].%s is not valid UTF-8", ErrInvalid, i, f.name)
			}
		}
		if len(m.ToolCalls) > 0 && m.Role != "assistant" {
			return nil, fmt.Errorf("%w: messages[%d] has tool_calls but role %q (only assistant turns call tools)", ErrInvalid, i, m.Role)
		}
		tm := tokenizer.Message{
			Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent,
			ToolCallID: m.ToolCallID, Name: m.Name,
		}
		for j, tc := range m.ToolCalls {
			call, err := convertCall(tc)
			if err != nil {
				return nil, fmt.Errorf("%w: messages[%d].tool_calls[%d]: %v", ErrInvalid, i, j, err)
			}
			tm.ToolCalls = append(tm.ToolCalls, call)
		}
		out[i] = tm
	}
	return out, nil
}

func convertCall(tc ToolCall) (tokenizer.ToolCall, error) {
	for _, f := range []struct{ name, s string }{{"id", tc.ID}, {"name", tc.Name}, {"arguments", tc.Arguments}} {
		if !utf8.ValidString(f.s) {
			return tokenizer.ToolCall{}, fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	if tc.Name == "" {
		return tokenizer.ToolCall{}, fmt.Errorf("no function name")
	}
	args := json.RawMessage("{}")
	if strings.TrimSpace(tc.Arguments) != "" {
		args = json.RawMessage(tc.Arguments)
		if !json.Valid(args) {
			return tokenizer.ToolCall{}, fmt.Errorf("arguments are not JSON: %.80q", tc.Arguments)
		}
	}
	return tokenizer.ToolCall{
		ID: tc.ID, Type: "function",
		Function: tokenizer.FunctionCall{Name: tc.Name, Arguments: args},
	}, nil
}

// checkTools checks that every tool definition is a JSON object in UTF-8.
func checkTools(tools []json.RawMessage) error {
	for i, raw := range tools {
		if !utf8.Valid(raw) {
			return fmt.Errorf("%w: tools[%d] is not valid UTF-8", ErrInvalid, i)
		}
		if !json.Valid(raw) {
			return fmt.Errorf("%w: tools[%d] is not JSON", ErrInvalid, i)
		}
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
			return fmt.Errorf("%w: tools[%d] is not a JSON object", ErrInvalid, i)
		}
	}
	return nil
}
