package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/moemesh/moemesh/internal/jinja"
)

// Message is one turn of a chat, in the shape chat templates expect.
type Message struct {
	// Role is "system", "user", "assistant" or "tool".
	Role string `json:"role"`
	// Content is the text of the turn.
	Content string `json:"content"`
	// ReasoningContent is an assistant turn's thinking, when kept apart
	// from Content. Empty means absent: the Qwen3 template then takes the
	// thinking from a <think>...</think> block in Content.
	ReasoningContent string `json:"reasoning_content,omitempty"`
	// ToolCalls are the calls an assistant turn made.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is the id of the call a tool turn answers (OpenAI's
	// tool_call_id); the Qwen3 template does not print it.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is the function name of a tool turn, or a participant name.
	Name string `json:"name,omitempty"`
}

// ToolCall is a function call made by the assistant, in either shape chat
// clients send: OpenAI's {id, type, function: {name, arguments}}, or the bare
// {name, arguments}. Only the fields that are set reach the template, so that
// a template's "{% if tool_call.function %}" sees what the client sent: a
// bare call has no function field, and its Name and Arguments are read
// directly (the Qwen3 template handles both).
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function,omitzero"`
	// Name and Arguments are the bare shape's fields.
	Name      string          `json:"name,omitempty"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// FunctionCall names a function and its arguments: a JSON object, or a JSON
// string holding text the template copies verbatim.
type FunctionCall struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// TemplateOptions are the variables a chat template reads besides messages.
type TemplateOptions struct {
	// AddGenerationPrompt ends the prompt with the opening of an
	// assistant turn.
	AddGenerationPrompt bool
	// EnableThinking, when set, is passed as enable_thinking; nil leaves it
	// undefined so that the template's default applies (thinking on for
	// Qwen3).
	EnableThinking *bool
	// Tools are tool definitions passed as tools; each must be a JSON
	// object. Key order and the text of integers are kept (see
	// docs/tokenizer.md for how floats print).
	Tools []json.RawMessage
}

// HasChatTemplate reports whether the tokenizer has a chat template.
func (t *Tokenizer) HasChatTemplate() bool { return t.template != nil }

// ApplyChatTemplate renders the chat template of tokenizer_config.json over
// messages. The result is prompt text; Encode turns it into ids.
func (t *Tokenizer) ApplyChatTemplate(messages []Message, opts TemplateOptions) (string, error) {
	if t.template == nil {
		return "", ErrNoChatTemplate
	}
	msgs := make([]jinja.Value, len(messages))
	for i, m := range messages {
		raw, err := json.Marshal(m)
		if err != nil {
			return "", fmt.Errorf("%w: message %d: %v", ErrTemplate, i, err)
		}
		if msgs[i], err = jsonValue(raw); err != nil {
			return "", fmt.Errorf("%w: message %d: %v", ErrTemplate, i, err)
		}
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(msgs),
		"add_generation_prompt": jinja.NewBool(opts.AddGenerationPrompt),
	}
	if opts.EnableThinking != nil {
		data["enable_thinking"] = jinja.NewBool(*opts.EnableThinking)
	}
	if len(opts.Tools) > 0 {
		tools := make([]jinja.Value, len(opts.Tools))
		for i, raw := range opts.Tools {
			v, err := jsonValue(raw)
			if err != nil {
				return "", fmt.Errorf("%w: tool %d: %v", ErrTemplate, i, err)
			}
			if !v.IsDict() {
				return "", fmt.Errorf("%w: tool %d is not a JSON object", ErrTemplate, i)
			}
			tools[i] = v
		}
		data["tools"] = jinja.NewList(tools)
	}
	for name, tok := range map[string]string{"eos_token": t.eosToken, "bos_token": t.bosToken, "pad_token": t.padToken} {
		if tok != "" {
			data[name] = jinja.NewString(tok)
		}
	}
	out, err := t.template.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	return out, nil
}

// jsonValue converts one JSON value to a template value, keeping the key
// order of objects (tojson then writes keys as given, like Python's dicts).
func jsonValue(raw []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return jinja.Undefined(), fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch x := tok.(type) {
	case json.Delim:
		switch x {
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := dec.Token() // ]
			return jinja.NewList(items), err
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				key, _ := k.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(key, v)
			}
			_, err := dec.Token() // }
			return d, err
		}
		return jinja.Undefined(), fmt.Errorf("unexpected %v", x)
	default:
		return jinja.FromGoValue(x), nil // nil, bool, string, json.Number
	}
}
