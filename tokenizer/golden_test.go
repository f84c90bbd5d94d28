package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// golden mirrors testdata/golden-public.json (see its PROVENANCE.md in
// assets/qwen3).
type golden struct {
	Encode []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"encode"`
	Decode []struct {
		IDs  []int  `json:"ids"`
		Text string `json:"text"`
	} `json:"decode"`
	Chat []struct {
		Messages       []Message `json:"messages"`
		EnableThinking *bool     `json:"enable_thinking"`
		Prompt         string    `json:"prompt"`
		IDs            []int     `json:"ids"`
	} `json:"chat"`
}

func loadGolden(t testing.TB) golden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden-public.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func qwen3T(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := Qwen3()
	if err != nil {
		t.Fatalf("Qwen3: %v", err)
	}
	return tok
}

func TestGoldenEncode(t *testing.T) {
	tok, g := qwen3T(t), loadGolden(t)
	if len(g.Encode) != 400 {
		t.Fatalf("golden has %d encode cases, want 400", len(g.Encode))
	}
	for i, tc := range g.Encode {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if diff := cmp.Diff(tc.IDs, tok.Encode(tc.Text)); diff != "" {
				t.Errorf("Encode(%q) (-want +got):\n%s", tc.Text, diff)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	tok, g := qwen3T(t), loadGolden(t)
	if len(g.Decode) != 100 {
		t.Fatalf("golden has %d decode cases, want 100", len(g.Decode))
	}
	for i, tc := range g.Decode {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if diff := cmp.Diff(tc.Text, tok.Decode(tc.IDs)); diff != "" {
				t.Errorf("Decode(%v) (-want +got):\n%s", tc.IDs, diff)
			}
			var streamed string
			d := tok.NewStreamDecoder()
			for _, id := range tc.IDs {
				streamed += d.Push(id)
			}
			streamed += d.Flush()
			if diff := cmp.Diff(tc.Text, streamed); diff != "" {
				t.Errorf("streamed decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGoldenChat(t *testing.T) {
	tok, g := qwen3T(t), loadGolden(t)
	if len(g.Chat) != 50 {
		t.Fatalf("golden has %d chat cases, want 50", len(g.Chat))
	}
	for i, tc := range g.Chat {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got, err := tok.ApplyChatTemplate(tc.Messages, TemplateOptions{AddGenerationPrompt: true, EnableThinking: tc.EnableThinking})
			if err != nil {
				t.Fatalf("ApplyChatTemplate: %v", err)
			}
			if diff := cmp.Diff(tc.Prompt, got); diff != "" {
				t.Errorf("prompt (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.IDs, tok.Encode(got)); diff != "" {
				t.Errorf("prompt ids (-want +got):\n%s", diff)
			}
		})
	}
}

// goldenTools mirrors testdata/golden-tools.json: chats with tool
// definitions, assistant tool calls in both shapes and role: tool results.
type goldenTools struct {
	Chat []struct {
		Messages       []Message         `json:"messages"`
		Tools          []json.RawMessage `json:"tools"`
		EnableThinking *bool             `json:"enable_thinking"`
		Prompt         string            `json:"prompt"`
		IDs            []int             `json:"ids"`
	} `json:"chat"`
}

func TestGoldenChatTools(t *testing.T) {
	tok := qwen3T(t)
	b, err := os.ReadFile(filepath.Join("testdata", "golden-tools.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenTools
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Chat) != 40 {
		t.Fatalf("golden has %d chat cases, want 40", len(g.Chat))
	}
	for i, tc := range g.Chat {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got, err := tok.ApplyChatTemplate(tc.Messages, TemplateOptions{AddGenerationPrompt: true, EnableThinking: tc.EnableThinking, Tools: tc.Tools})
			if err != nil {
				t.Fatalf("ApplyChatTemplate: %v", err)
			}
			if diff := cmp.Diff(tc.Prompt, got); diff != "" {
				t.Errorf("prompt (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.IDs, tok.Encode(got)); diff != "" {
				t.Errorf("prompt ids (-want +got):\n%s", diff)
			}
		})
	}
}
