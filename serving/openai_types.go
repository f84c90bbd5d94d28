package serving

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/moemesh/moemesh/sampling"
)

// The OpenAI-compatible request and response bodies. Unknown fields are
// ignored, as vLLM does; a known field of the wrong type is an error.

// oaSampling are the sampling fields of both endpoints (vLLM's names).
type oaSampling struct {
	Temperature       *float32 `json:"temperature"`
	TopP              *float32 `json:"top_p"`
	TopK              *int     `json:"top_k"`
	MinP              *float32 `json:"min_p"`
	PresencePenalty   *float32 `json:"presence_penalty"`
	FrequencyPenalty  *float32 `json:"frequency_penalty"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
	Seed              *uint64  `json:"seed"`

	Stop          stopField `json:"stop"`
	StopTokenIDs  []int32   `json:"stop_token_ids"`
	IgnoreEOS     bool      `json:"ignore_eos"`
	Stream        bool      `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens *int64 `json:"max_tokens"`
	N         *int   `json:"n"`
}

func (s *oaSampling) overrides() sampling.Overrides {
	return sampling.Overrides{Temperature: s.Temperature, TopP: s.TopP, MinP: s.MinP, PresencePenalty: s.PresencePenalty,
		FrequencyPenalty: s.FrequencyPenalty, RepetitionPenalty: s.RepetitionPenalty, TopK: s.TopK, Seed: s.Seed}
}

func (s *oaSampling) includeUsage() bool {
	return s.StreamOptions != nil && s.StreamOptions.IncludeUsage
}

// stopField is a string or a list of strings.
type stopField []string

func (f *stopField) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*f = stopField{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("stop must be a string or a list of strings")
	}
	*f = list
	return nil
}

type chatCompletionRequest struct {
	oaSampling
	Model               string            `json:"model"`
	Messages            []oaMessage       `json:"messages"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	Logprobs            bool              `json:"logprobs"`
	TopLogprobs         *int              `json:"top_logprobs"`
	Tools               []json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage   `json:"tool_choice"`
	ChatTemplateKwargs  map[string]any    `json:"chat_template_kwargs"`
	ThinkingBudget      *int64            `json:"thinking_budget"`
	ThinkingTokenBudget *int64            `json:"thinking_token_budget"`
	EnableThinking      *bool             `json:"enable_thinking"`
}

// oaMessage is one chat message.
type oaMessage struct {
	Role             string       `json:"role"`
	Content          contentField `json:"content"`
	ReasoningContent *string      `json:"reasoning_content"`
	Reasoning        *string      `json:"reasoning"`
	ToolCalls        []oaToolCall `json:"tool_calls"`
	ToolCallID       string       `json:"tool_call_id"`
	Name             string       `json:"name"`
}

// contentField is a string, a list of text parts, or null.
type contentField string

func (f *contentField) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = contentField(s)
		return nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return fmt.Errorf("content must be a string or a list of text parts")
	}
	var out []byte
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return fmt.Errorf("content part %d has type %q: only text parts are supported", i, p.Type)
		}
		out = append(out, *p.Text...)
	}
	*f = contentField(out)
	return nil
}

type oaToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string    `json:"name"`
		Arguments argsField `json:"arguments"`
	} `json:"function"`
}

// argsField is the arguments' JSON text: OpenAI sends a string; an object
// is taken as its own text.
type argsField string

func (f *argsField) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = argsField(s)
		return nil
	}
	*f = argsField(b)
	return nil
}

func (f argsField) MarshalJSON() ([]byte, error) { return json.Marshal(string(f)) }

type completionRequest struct {
	oaSampling
	Model    string          `json:"model"`
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
	Suffix   *string         `json:"suffix"`
}

// Responses.

type oaUsage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details,omitempty"`
}

func oaUsageOf(u usage, chat bool) *oaUsage {
	out := &oaUsage{PromptTokens: u.prompt, CompletionTokens: u.completion, TotalTokens: u.prompt + u.completion}
	if chat {
		out.CompletionTokensDetails = &struct {
			ReasoningTokens int `json:"reasoning_tokens"`
		}{u.reasoning}
	}
	return out
}

type oaChatMessage struct {
	Role             string       `json:"role,omitempty"`
	Content          *string      `json:"content,omitempty"`
	ReasoningContent *string      `json:"reasoning_content,omitempty"`
	Reasoning        *string      `json:"reasoning,omitempty"`
	ToolCalls        []oaToolCall `json:"tool_calls,omitempty"`
}

type oaTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type oaLogprob struct {
	oaTopLogprob
	TopLogprobs []oaTopLogprob `json:"top_logprobs"`
}

type oaChatLogprobs struct {
	Content []oaLogprob `json:"content"`
}

type oaChatChoice struct {
	Index        int             `json:"index"`
	Message      *oaChatMessage  `json:"message,omitempty"`
	Delta        *oaChatMessage  `json:"delta,omitempty"`
	Logprobs     *oaChatLogprobs `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type oaChatResponse struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []oaChatChoice `json:"choices"`
	Usage   *oaUsage       `json:"usage,omitempty"`
}

type oaCompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type oaCompletionChoice struct {
	Index        int                   `json:"index"`
	Text         string                `json:"text"`
	Logprobs     *oaCompletionLogprobs `json:"logprobs"`
	FinishReason *string               `json:"finish_reason"`
}

type oaCompletionResponse struct {
	ID      string               `json:"id"`
	Object  string               `json:"object"`
	Created int64                `json:"created"`
	Model   string               `json:"model"`
	Choices []oaCompletionChoice `json:"choices"`
	Usage   *oaUsage             `json:"usage,omitempty"`
}

type oaError struct {
	Error oaErrorBody `json:"error"`
}

type oaErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}
