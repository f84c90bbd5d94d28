package serving

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/moemesh/moemesh/chat"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

// Conversions shared by the gRPC and HTTP APIs.

// roles are the roles a message may have.
var roles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// maxMessages bounds a conversation (each message costs template work).
const maxMessages = 4096

// conversation checks a chat request's messages and tools and renders
// it.
func conversation(m *served, msgs []chat.Message, tools []json.RawMessage, thinking *bool, genPrompt bool) (chat.Prompt, error) {
	if len(msgs) == 0 {
		return chat.Prompt{}, fmt.Errorf("%w: messages is empty; send at least one message", ErrInvalid)
	}
	if len(msgs) > maxMessages {
		return chat.Prompt{}, fmt.Errorf("%w: %d messages, at most %d", ErrInvalid, len(msgs), maxMessages)
	}
	for i, msg := range msgs {
		if !roles[msg.Role] {
			return chat.Prompt{}, fmt.Errorf("%w: messages[%d].role %q: allowed roles are system, user, assistant, tool", ErrInvalid, i, msg.Role)
		}
		for _, s := range []string{msg.Content, msg.ReasoningContent, msg.Name, msg.ToolCallID} {
			if !utf8.ValidString(s) {
				return chat.Prompt{}, fmt.Errorf("%w: messages[%d] is not valid UTF-8", ErrInvalid, i)
			}
		}
	}
	for i, t := range tools {
		if err := checkTool(t); err != nil {
			return chat.Prompt{}, fmt.Errorf("%w: tools[%d]: %v", ErrInvalid, i, err)
		}
	}
	return chat.Render(m.tok, chat.Conversation{Messages: msgs, Tools: tools, EnableThinking: thinking, AddGenerationPrompt: genPrompt})
}

// checkTool checks one OpenAI tool definition without re-encoding it, so
// its numbers and key order stay as written.
func checkTool(t json.RawMessage) error {
	if !json.Valid(t) {
		return fmt.Errorf("not valid JSON")
	}
	var v struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if tt := bytes.TrimSpace(t); len(tt) == 0 || tt[0] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	if err := json.Unmarshal(t, &v); err != nil {
		return fmt.Errorf("not a tool definition: %v", err)
	}
	if v.Type != "" && v.Type != "function" {
		return fmt.Errorf("type %q: only \"function\" tools exist", v.Type)
	}
	if v.Function == nil || v.Function.Name == "" {
		return fmt.Errorf("a tool needs function.name")
	}
	return nil
}

// byteOf inverts GPT-2's byte-level alphabet (bytes_to_unicode).
var byteOf = func() map[rune]byte {
	m := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 {
			m[rune(b)] = byte(b)
		} else {
			m[rune(256+n)] = byte(b)
			n++
		}
	}
	return m
}()

// tokenBytes returns the bytes a token stands for.
func tokenBytes(tok *tokenizer.Tokenizer, id int32) []byte {
	s, ok := tok.Token(int(id))
	if !ok {
		return nil
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := byteOf[r]
		if !ok { // an added token's content, as written
			return []byte(s)
		}
		out = append(out, b)
	}
	return out
}

// tokenText returns a token's text, bytes that are not UTF-8 as \xNN.
func tokenText(tok *tokenizer.Tokenizer, id int32) string {
	b := tokenBytes(tok, id)
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&sb, "\\x%02x", b[0])
			b = b[1:]
			continue
		}
		sb.Write(b[:n])
		b = b[n:]
	}
	return sb.String()
}

// logprob is one token's log-probability with its candidates.
type logprob struct {
	id     int32
	text   string
	lp     float32
	top    []logprob
	forced bool
}

func logprobs(tok *tokenizer.Tokenizer, toks []scheduler.Token) []logprob {
	out := make([]logprob, len(toks))
	for i, t := range toks {
		out[i] = logprob{id: t.ID, text: tokenText(tok, t.ID), lp: t.Logprob, forced: t.Forced}
		for j, id := range t.TopIDs {
			if j < len(t.TopLogprobs) {
				out[i].top = append(out[i].top, logprob{id: id, text: tokenText(tok, id), lp: t.TopLogprobs[j]})
			}
		}
	}
	return out
}
