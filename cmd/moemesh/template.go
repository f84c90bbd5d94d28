package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/tokenizer"
)

func init() { register(newTemplateCmd) }

// templateOptions holds the flags and state of `moemesh template`.
type templateOptions struct {
	Model               string
	JSONL               bool
	AddGenerationPrompt bool

	tok *tokenizer.Tokenizer
	s   IOStreams
}

// chatRequest is one input of `moemesh template`; other fields are ignored.
type chatRequest struct {
	Messages       []tokenizer.Message `json:"messages"`
	EnableThinking *bool               `json:"enable_thinking"`
	Tools          []json.RawMessage   `json:"tools"`
}

func newTemplateCmd(s IOStreams) *cobra.Command {
	o := &templateOptions{s: s}
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Render chats into prompts with the model's chat template",
		Long: `Read {"messages": [...], "tools": [...], "enable_thinking": true|false|null}
from stdin and write the prompt the model's chat template makes of it. With
--jsonl every input line is one such object and every output line the prompt
as a JSON string; without it stdin holds one object and stdout gets the prompt
text. enable_thinking null or absent leaves the template's default; tools
(optional) are tool definitions, JSON objects, rendered with their keys in the
order given. Assistant tool_calls may be in OpenAI's shape
{"id", "type", "function": {"name", "arguments"}} or the bare
{"name", "arguments"}; arguments an object or a JSON string.

Without --model the embedded Qwen3 template is used.`,
		Example: `  echo '{"messages":[{"role":"user","content":"Hi"}],"enable_thinking":false}' | moemesh template --jsonl
  moemesh template --model ./Qwen3-30B-A3B --jsonl < chats.jsonl`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model directory with tokenizer.json and tokenizer_config.json (default: embedded Qwen3)")
	f.BoolVar(&o.JSONL, "jsonl", false, "one chat per input line, one JSON string per output line")
	f.BoolVar(&o.AddGenerationPrompt, "add-generation-prompt", true, "end the prompt with the opening of an assistant turn")
	return cmd
}

// Complete loads the tokenizer.
func (o *templateOptions) Complete() error {
	tok, err := loadTokenizer(o.Model)
	if err != nil {
		return err
	}
	o.tok = tok
	return nil
}

// Validate checks that the model has a chat template.
func (o *templateOptions) Validate() error {
	if !o.tok.HasChatTemplate() {
		return usagef("--model %s: tokenizer_config.json has no chat_template", o.Model)
	}
	return nil
}

// Run renders stdin to stdout.
func (o *templateOptions) Run() error {
	w := bufio.NewWriter(o.s.Out)
	var err error
	if o.JSONL {
		err = eachLine(o.s.In, func(n int, line []byte) error {
			prompt, err := o.render(line)
			if err != nil {
				return usagef("line %d: %v", n, err)
			}
			return writeJSONLine(w, prompt)
		})
	} else {
		var data []byte
		if data, err = io.ReadAll(o.s.In); err != nil {
			err = fmt.Errorf("read stdin: %w", err)
		} else {
			var prompt string
			if prompt, err = o.render(data); err != nil {
				err = usagef("stdin: %v", err)
			} else {
				_, err = io.WriteString(w, prompt)
			}
		}
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (o *templateOptions) render(data []byte) (string, error) {
	var req chatRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return "", fmt.Errorf("want {\"messages\": [...], \"tools\": [...], \"enable_thinking\": ...}: %w", err)
	}
	if req.Messages == nil {
		return "", fmt.Errorf("no messages")
	}
	return o.tok.ApplyChatTemplate(req.Messages, tokenizer.TemplateOptions{
		AddGenerationPrompt: o.AddGenerationPrompt,
		EnableThinking:      req.EnableThinking,
		Tools:               req.Tools,
	})
}
