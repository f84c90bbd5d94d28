// Package chat is a stand-in for the top-level chat package (Qwen3 chat
// rendering and reply parsing) with the same API, so that serving builds
// and is tested before that package lands; it is deleted then and serving
// imports github.com/moemesh/moemesh/chat instead.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/moemesh/moemesh/tokenizer"
)

// ErrInvalid: a conversation that cannot be rendered.
var ErrInvalid = errors.New("chat: invalid conversation")

// Message is one turn.
type Message struct {
	Role, Content, ReasoningContent string
	ToolCalls                       []ToolCall
	ToolCallID, Name                string
}

// ToolCall is one function call.
type ToolCall struct{ ID, Name, Arguments string }

// Conversation is what Render renders.
type Conversation struct {
	Messages            []Message
	Tools               []json.RawMessage
	EnableThinking      *bool
	AddGenerationPrompt bool
}

// Prompt is a rendered conversation.
type Prompt struct {
	Text     string
	IDs      []int32
	Thinking bool
}

// Render renders c with tok's chat template.
func Render(tok *tokenizer.Tokenizer, c Conversation) (Prompt, error) {
	if len(c.Messages) == 0 {
		return Prompt{}, fmt.Errorf("%w: no messages", ErrInvalid)
	}
	msgs := make([]tokenizer.Message, len(c.Messages))
	for i, m := range c.Messages {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return Prompt{}, fmt.Errorf("%w: message %d has role %q", ErrInvalid, i, m.Role)
		}
		tm := tokenizer.Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent}
		for _, tc := range m.ToolCalls {
			args := json.RawMessage(tc.Arguments)
			if !json.Valid(args) {
				args, _ = json.Marshal(tc.Arguments)
			}
			tm.ToolCalls = append(tm.ToolCalls, tokenizer.ToolCall{Type: "function", Function: tokenizer.FunctionCall{Name: tc.Name, Arguments: args}})
		}
		msgs[i] = tm
	}
	for i, t := range c.Tools {
		if !json.Valid(t) || !strings.HasPrefix(strings.TrimSpace(string(t)), "{") {
			return Prompt{}, fmt.Errorf("%w: tool %d is not a JSON object", ErrInvalid, i)
		}
	}
	text, err := tok.ApplyChatTemplate(msgs, tokenizer.TemplateOptions{AddGenerationPrompt: c.AddGenerationPrompt, EnableThinking: c.EnableThinking, Tools: c.Tools})
	if err != nil {
		return Prompt{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := Prompt{Text: text, Thinking: c.AddGenerationPrompt && !strings.HasSuffix(text, "</think>\n\n")}
	for _, id := range tok.Encode(text) {
		p.IDs = append(p.IDs, int32(id))
	}
	return p, nil
}

// Delta is the new text of a reply.
type Delta struct {
	Reasoning, Content string
	ToolCalls          []ToolCall
}

// Parser splits a reply into reasoning, content and tool calls.
type Parser struct {
	tok                            *tokenizer.Tokenizer
	dec                            *tokenizer.StreamDecoder
	thinking, inCall, called, lead bool
	think, thinkEnd, open, closeID int32
	call                           strings.Builder
	n                              int
}

// NewParser returns a parser for one reply; thinking says the reply
// starts inside the thinking.
func NewParser(tok *tokenizer.Tokenizer, thinking bool) *Parser {
	id := func(s string) int32 {
		v, ok := tok.TokenID(s)
		if !ok {
			return -1
		}
		return int32(v)
	}
	return &Parser{tok: tok, dec: tok.NewStreamDecoder(), thinking: thinking,
		think: id("<think>"), thinkEnd: id("</think>"), open: id("<tool_call>"), closeID: id("</tool_call>")}
}

// Push adds one token.
func (p *Parser) Push(id int32) Delta {
	var d Delta
	first := p.n == 0
	p.n++
	switch {
	case id == p.think && first:
		p.thinking = true
		return d
	case id == p.thinkEnd && p.thinking:
		d.Reasoning = p.dec.Flush()
		p.thinking, p.lead = false, true
		return d
	case id == p.open && !p.thinking:
		d.Content = p.dec.Flush()
		p.inCall = true
		p.call.Reset()
		return d
	case id == p.closeID && p.inCall:
		p.call.WriteString(p.dec.Flush())
		p.inCall = false
		if tc, ok := parseCall(p.call.String()); ok {
			p.called = true
			d.ToolCalls = append(d.ToolCalls, tc)
		} else {
			d.Content = "<tool_call>" + p.call.String() + "</tool_call>"
		}
		return d
	}
	s := p.dec.Push(int(id))
	switch {
	case p.thinking:
		d.Reasoning = s
	case p.inCall:
		p.call.WriteString(s)
	default:
		if p.lead {
			s = strings.TrimLeft(s, "\n")
			p.lead = s == ""
		}
		d.Content = s
	}
	return d
}

func parseCall(s string) (ToolCall, bool) {
	var c struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &c); err != nil || c.Name == "" {
		return ToolCall{}, false
	}
	return ToolCall{Name: c.Name, Arguments: string(c.Arguments)}, true
}

// Flush returns what is left.
func (p *Parser) Flush() Delta {
	s := p.dec.Flush()
	switch {
	case p.thinking:
		return Delta{Reasoning: s}
	case p.inCall:
		return Delta{Content: "<tool_call>" + p.call.String() + s}
	}
	return Delta{Content: s}
}

// ToolCalled reports whether the reply made a call.
func (p *Parser) ToolCalled() bool { return p.called }

// BudgetText is inserted when the thinking reaches its budget.
const BudgetText = "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n</think>.\n\n"

// BudgetInsert returns the ids of BudgetText and the id of </think>.
func BudgetInsert(tok *tokenizer.Tokenizer) ([]int32, int32, error) {
	end, ok := tok.TokenID("</think>")
	if !ok {
		return nil, 0, fmt.Errorf("%w: the tokenizer has no </think>", ErrInvalid)
	}
	var ids []int32
	for _, id := range tok.Encode(BudgetText) {
		ids = append(ids, int32(id))
	}
	return ids, int32(end), nil
}
