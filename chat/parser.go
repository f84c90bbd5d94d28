package chat

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"strings"
	"unicode"

	"github.com/moemesh/moemesh/tokenizer"
)

// The marker tokens, looked up by name in the tokenizer.
const (
	thinkStart = "<think>"
	thinkEnd   = "</think>"
	toolStart  = "<tool_call>"
	toolEnd    = "</tool_call>"
)

// Delta is what one step of generation adds to the reply. Concatenating the
// Reasoning and Content of every delta and appending their ToolCalls gives
// the whole reply.
type Delta struct {
	// Reasoning is thinking text (inside <think>...</think>).
	Reasoning string
	// Content is answer text.
	Content string
	// ToolCalls are calls completed in this step, each whole.
	ToolCalls []ToolCall
}

// IsEmpty reports whether d adds nothing.
func (d Delta) IsEmpty() bool {
	return d.Reasoning == "" && d.Content == "" && len(d.ToolCalls) == 0
}

// Append adds o to d.
func (d *Delta) Append(o Delta) {
	d.Reasoning += o.Reasoning
	d.Content += o.Content
	d.ToolCalls = append(d.ToolCalls, o.ToolCalls...)
}

type parseState uint8

const (
	inContent parseState = iota
	inReasoning
	inToolCall
)

// Parser turns generated token ids into reasoning, content and tool calls as
// they arrive. It decodes the text itself, holding back UTF-8 split across
// tokens. Special tokens (<|im_end|>, <|endoftext|>, ...) produce no text.
//
// Reasoning is the text between <think> and </think>; when the parser starts
// in thinking mode the reply is reasoning from its first token, whether or
// not the model writes <think> (as vLLM's qwen3 reasoning parser does when
// thinking is on). A <tool_call> ... </tool_call> block in the content whose
// text is a JSON object {"name": "...", "arguments": {...}} becomes a
// ToolCall, emitted whole when </tool_call> arrives; any other block stays
// content, tags included (as vLLM's hermes parser does). White space between
// a tool call and other content or the end of the reply is dropped; the
// markers themselves produce no text. docs/chat.md has the details.
//
// A Parser belongs to one sequence and is not safe for concurrent use.
type Parser struct {
	dec   *tokenizer.StreamDecoder
	isSpc func(int) bool

	// Marker ids; -1 where the tokenizer lacks the token.
	thinkStart, thinkEnd, toolStart, toolEnd int

	state     parseState
	block     strings.Builder // text of the open tool-call block
	blockWS   string          // white space held before the open block
	pendingWS string          // trailing white space of the content, held
	afterCall bool            // the last thing in the content is a tool call
	called    bool

	out Delta // what the current Push or Flush produces
}

// NewParser returns a parser for one reply. thinking says whether generation
// starts inside a thinking phase (Prompt.Thinking); it is ignored when the
// tokenizer has no </think> token.
func NewParser(tok *tokenizer.Tokenizer, thinking bool) *Parser {
	p := &Parser{dec: tok.NewStreamDecoder(), isSpc: tok.IsSpecial}
	id := func(s string) int {
		if id, ok := tok.TokenID(s); ok {
			return id
		}
		return -1
	}
	p.thinkStart, p.thinkEnd, p.toolStart, p.toolEnd = id(thinkStart), id(thinkEnd), id(toolStart), id(toolEnd)
	if thinking && p.thinkEnd >= 0 {
		p.state = inReasoning
	}
	return p
}

// Parse is the non-streaming form: the reply of ids, as the concatenation
// of the deltas of a Parser fed all of them, then flushed.
func Parse(tok *tokenizer.Tokenizer, thinking bool, ids []int32) Delta {
	p := NewParser(tok, thinking)
	var d Delta
	for _, id := range ids {
		d.Append(p.Push(id))
	}
	d.Append(p.Flush())
	return d
}

// ToolCalled reports whether the reply so far holds a tool call.
func (p *Parser) ToolCalled() bool { return p.called }

// Push feeds the next generated id and returns what it completes.
func (p *Parser) Push(id int32) Delta {
	p.out = Delta{}
	if p.marker(int(id)) {
		return p.take()
	}
	if p.isSpc(int(id)) {
		p.text(p.dec.Flush())
		return p.take()
	}
	p.text(p.dec.Push(int(id)))
	return p.take()
}

// Flush ends the reply: undecodable trailing bytes become U+FFFD, an
// unclosed tool-call block is parsed as if it were closed (vLLM's hermes
// parser does so for a reply cut short) and held white space is released.
// The parser is then at the end of the reply.
func (p *Parser) Flush() Delta {
	p.out = Delta{}
	p.text(p.dec.Flush())
	if p.state == inToolCall {
		p.endBlock(false)
	}
	if !p.afterCall {
		p.out.Content += p.pendingWS
	}
	p.pendingWS, p.afterCall = "", false
	return p.take()
}

func (p *Parser) take() Delta {
	d := p.out
	p.out = Delta{}
	return d
}

// marker handles a marker id that changes state and reports whether it did;
// a marker that is plain text where it stands (a <tool_call> in reasoning)
// is left to the decoder.
func (p *Parser) marker(id int) bool {
	if id < 0 {
		return false
	}
	switch {
	case id == p.thinkStart && p.state != inToolCall:
		p.text(p.dec.Flush())
		p.state = inReasoning // a repeated <think> in reasoning is dropped
		return true
	case id == p.thinkEnd && p.state != inToolCall:
		p.text(p.dec.Flush())
		p.state = inContent // a stray </think> in content is dropped
		return true
	case id == p.toolStart && p.state == inContent:
		p.text(p.dec.Flush())
		p.state = inToolCall
		p.block.Reset()
		p.blockWS, p.pendingWS = p.pendingWS, ""
		return true
	case id == p.toolEnd && p.state == inToolCall:
		p.text(p.dec.Flush())
		p.endBlock(true)
		return true
	}
	return false
}

// text routes decoded text to the current state.
func (p *Parser) text(s string) {
	if s == "" {
		return
	}
	switch p.state {
	case inReasoning:
		p.out.Reasoning += s
	case inToolCall:
		p.block.WriteString(s)
	default:
		p.content(s)
	}
}

// content adds answer text, holding trailing white space until it is known
// whether a tool call follows.
func (p *Parser) content(s string) {
	all := p.pendingWS + s
	body := strings.TrimRightFunc(all, unicode.IsSpace)
	if body == "" {
		p.pendingWS = all
		return
	}
	p.pendingWS = all[len(body):]
	if p.afterCall {
		body = strings.TrimLeftFunc(body, unicode.IsSpace)
		p.afterCall = false
	}
	p.out.Content += body
}

// endBlock parses the open tool-call block: a call, or content as written.
func (p *Parser) endBlock(closed bool) {
	inner := p.block.String()
	p.block.Reset()
	p.state = inContent
	if call, ok := parseCall(inner); ok {
		p.out.ToolCalls = append(p.out.ToolCalls, call)
		p.called, p.afterCall = true, true
		p.blockWS = ""
		return
	}
	text := toolStart + inner
	if closed {
		text += toolEnd
	}
	p.pendingWS, p.blockWS = p.blockWS, ""
	p.content(text)
}

// parseCall reads {"name": "...", "arguments": {...}}; Arguments keeps the
// object's text as the model wrote it.
func parseCall(inner string) (ToolCall, bool) {
	var v struct {
		Name      *string         `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(inner), &v); err != nil || v.Name == nil || *v.Name == "" {
		return ToolCall{}, false
	}
	args := bytes.TrimSpace(v.Arguments)
	if len(args) == 0 || args[0] != '{' {
		return ToolCall{}, false
	}
	return ToolCall{ID: newCallID(), Name: *v.Name, Arguments: string(args)}, true
}

// newCallID returns "call_" and 26 random base32 characters.
func newCallID() string { return "call_" + rand.Text() }
