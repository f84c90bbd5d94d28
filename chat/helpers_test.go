package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/tokenizer"
)

// qwen3 returns the real Qwen3 tokenizer (embedded in the tokenizer
// package, byte-identical to fixtures/qwen3-tokenizer).
func qwen3(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Qwen3()
	if err != nil {
		t.Fatalf("tokenizer.Qwen3: %v", err)
	}
	return tok
}

// goldenChat is one chat of tokenizer/testdata/golden-{public,tools}.json,
// messages kept raw so that each test reads them in its own shape.
type goldenChat struct {
	Messages       []json.RawMessage `json:"messages"`
	Tools          []json.RawMessage `json:"tools"`
	EnableThinking *bool             `json:"enable_thinking"`
	Prompt         string            `json:"prompt"`
	IDs            []int32           `json:"ids"`
}

func loadGoldenChats(t testing.TB, name string) []goldenChat {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Chat []goldenChat `json:"chat"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.Chat
}

// goldenMessage is a fixture message: tool calls in OpenAI's shape or the
// bare one, arguments an object or a JSON string.
type goldenMessage struct {
	Role             string  `json:"role"`
	Content          string  `json:"content"`
	ReasoningContent *string `json:"reasoning_content"`
	ToolCalls        []struct {
		ID       string          `json:"id"`
		Name     string          `json:"name"`
		Args     json.RawMessage `json:"arguments"`
		Function *struct {
			Name string          `json:"name"`
			Args json.RawMessage `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// conversation converts a golden chat into a Conversation. ok is false
// where the chat cannot be expressed in this package's terms: a tool call
// whose arguments are a JSON string (the template prints those verbatim,
// Render decodes arguments as vLLM does) or an empty reasoning_content
// (which Message cannot tell from an absent one).
func (g goldenChat) conversation(t testing.TB) (c Conversation, ok bool) {
	t.Helper()
	c = Conversation{Tools: g.Tools, EnableThinking: g.EnableThinking, AddGenerationPrompt: true}
	for _, raw := range g.Messages {
		var m goldenMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		msg := Message{Role: m.Role, Content: m.Content}
		if m.ReasoningContent != nil {
			if *m.ReasoningContent == "" {
				return c, false
			}
			msg.ReasoningContent = *m.ReasoningContent
		}
		for _, tc := range m.ToolCalls {
			name, args := tc.Name, tc.Args
			if tc.Function != nil {
				name, args = tc.Function.Name, tc.Function.Args
			}
			if len(args) > 0 && args[0] == '"' {
				return c, false
			}
			msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Name: name, Arguments: string(args)})
		}
		c.Messages = append(c.Messages, msg)
	}
	return c, true
}

func ids32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}
