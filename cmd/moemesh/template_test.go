package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTemplateToolsGolden renders every chat of golden-tools.json through
// `moemesh template --jsonl`, the input lines carrying messages, tools and
// enable_thinking exactly as the fixture holds them (numbers and key order as
// written).
func TestTemplateToolsGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "tokenizer", "testdata", "golden-tools.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Chat []struct {
			Messages       json.RawMessage `json:"messages"`
			Tools          json.RawMessage `json:"tools"`
			EnableThinking json.RawMessage `json:"enable_thinking"`
			Prompt         string          `json:"prompt"`
		} `json:"chat"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Chat) != 40 {
		t.Fatalf("golden has %d chats, want 40", len(g.Chat))
	}
	var in strings.Builder
	want := make([]string, len(g.Chat))
	for i, c := range g.Chat {
		// Raw fields are spliced so that nothing is re-encoded on the way.
		in.WriteString(`{"messages":` + string(c.Messages) + `,"tools":` + string(c.Tools) + `,"enable_thinking":` + string(c.EnableThinking) + "}\n")
		want[i] = c.Prompt
	}
	code, out, errOut := runCLI(t, in.String(), "template", "--jsonl")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	got := decodeLines[string](t, out)
	if len(got) != len(want) {
		t.Fatalf("got %d prompts, want %d", len(got), len(want))
	}
	for i := range want {
		if diff := cmp.Diff(want[i], got[i]); diff != "" {
			t.Errorf("chat %d prompt (-want +got):\n%s", i, diff)
		}
	}
}

func TestTemplateToolErrors(t *testing.T) {
	for _, tc := range []struct {
		name, stdin string
	}{
		{"tool not an object", `{"messages":[{"role":"user","content":"a"}],"tools":[1]}`},
		{"tools not a list", `{"messages":[{"role":"user","content":"a"}],"tools":{"a":1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.stdin+"\n", "template", "--jsonl")
			if code != ExitUsage {
				t.Errorf("exit %d, want %d (stderr %q)", code, ExitUsage, errOut)
			}
			if !strings.Contains(errOut, "line 1:") {
				t.Errorf("stderr %q does not name the line", errOut)
			}
		})
	}
}
