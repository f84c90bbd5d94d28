package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/tokenizer"
)

// tokenizerGolden mirrors tokenizer/testdata/golden-public.json.
type tokenizerGolden struct {
	Encode []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"encode"`
	Decode []struct {
		IDs  []int  `json:"ids"`
		Text string `json:"text"`
	} `json:"decode"`
	Chat []struct {
		Messages       json.RawMessage `json:"messages"`
		EnableThinking *bool           `json:"enable_thinking"`
		Prompt         string          `json:"prompt"`
	} `json:"chat"`
}

func loadTokenizerGolden(t *testing.T) tokenizerGolden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "tokenizer", "testdata", "golden-public.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g tokenizerGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// runCLI runs moemesh with args and stdin, returning exit code and output.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

func jsonLines(t *testing.T, vs []any) string {
	t.Helper()
	var b strings.Builder
	for _, v := range vs {
		line, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// decodeLines parses one JSON value per output line into a slice of T.
func decodeLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var got []T
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("output line %d %q: %v", i+1, line, err)
		}
		got = append(got, v)
	}
	return got
}

// qwen3Dir writes the embedded Qwen3 tokenizer files to a directory.
func qwen3Dir(t *testing.T) string {
	t.Helper()
	tj, cj, err := tokenizer.Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{tokenizer.TokenizerFile: tj, tokenizer.ConfigFile: cj} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTokenizeGoldenJSONL(t *testing.T) {
	g := loadTokenizerGolden(t)
	var texts, wantIDs, idsIn, wantTexts []any
	for _, c := range g.Encode {
		texts, wantIDs = append(texts, c.Text), append(wantIDs, c.IDs)
	}
	for _, c := range g.Decode {
		idsIn, wantTexts = append(idsIn, c.IDs), append(wantTexts, c.Text)
	}
	for _, tc := range []struct {
		name  string
		model []string
	}{
		{"embedded", nil},
		{"model dir", []string{"--model", qwen3Dir(t)}},
	} {
		t.Run(tc.name+"/encode", func(t *testing.T) {
			code, out, errOut := runCLI(t, jsonLines(t, texts), append([]string{"tokenize", "--jsonl"}, tc.model...)...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			want := make([][]int, len(wantIDs))
			for i, v := range wantIDs {
				want[i] = v.([]int)
			}
			if diff := cmp.Diff(want, decodeLines[[]int](t, out)); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
		t.Run(tc.name+"/decode", func(t *testing.T) {
			code, out, errOut := runCLI(t, jsonLines(t, idsIn), append([]string{"tokenize", "--decode", "--jsonl"}, tc.model...)...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			want := make([]string, len(wantTexts))
			for i, v := range wantTexts {
				want[i] = v.(string)
			}
			if diff := cmp.Diff(want, decodeLines[string](t, out)); diff != "" {
				t.Errorf("texts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenizePlain(t *testing.T) {
	g := loadTokenizerGolden(t)
	enc, dec := g.Encode[0], g.Decode[0]
	idsJSON, err := json.Marshal(dec.IDs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"encode", []string{"tokenize"}, enc.Text, mustJSON(t, enc.IDs) + "\n"},
		{"encode keeps trailing newline", []string{"tokenize"}, "Hello world\n", "[9707,1879,198]\n"},
		{"encode empty", []string{"tokenize"}, "", "[]\n"},
		{"decode", []string{"tokenize", "--decode"}, string(idsJSON), dec.Text},
		{"decode special", []string{"tokenize", "--decode"}, "[151644, 872, 198]", "<|im_start|>user\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.stdin, tc.args...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			if diff := cmp.Diff(tc.want, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTemplateGoldenJSONL(t *testing.T) {
	g := loadTokenizerGolden(t)
	var in strings.Builder
	var want []string
	for _, c := range g.Chat {
		in.WriteString(mustJSON(t, map[string]any{"messages": c.Messages, "enable_thinking": c.EnableThinking}) + "\n")
		want = append(want, c.Prompt)
	}
	for _, tc := range []struct {
		name  string
		model []string
	}{
		{"embedded", nil},
		{"model dir", []string{"--model", qwen3Dir(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, in.String(), append([]string{"template", "--jsonl"}, tc.model...)...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			if diff := cmp.Diff(want, decodeLines[string](t, out)); diff != "" {
				t.Errorf("prompts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTemplatePlain(t *testing.T) {
	code, out, errOut := runCLI(t, `{"messages":[{"role":"user","content":"Hi"}],"enable_thinking":false}`, "template")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	want := "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
}

func TestTokenizeTemplateErrors(t *testing.T) {
	noTemplate := t.TempDir()
	tj, _, err := tokenizer.Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(noTemplate, tokenizer.TokenizerFile), tj, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantErr  string // what stderr must name
	}{
		{"encode line not a string", []string{"tokenize", "--jsonl"}, "\"ok\"\n[1]\n", ExitUsage, "line 2:"},
		{"decode line not ids", []string{"tokenize", "--jsonl", "--decode"}, "[1]\n\"x\"\n", ExitUsage, "line 2:"},
		{"decode id out of range", []string{"tokenize", "--jsonl", "--decode"}, "[1]\n[2]\n[151669]\n", ExitUsage, "line 3:"},
		{"decode negative id", []string{"tokenize", "--decode"}, "[-1]", ExitUsage, "stdin:"},
		{"decode not json", []string{"tokenize", "--decode"}, "hello", ExitUsage, "stdin:"},
		{"template malformed line", []string{"template", "--jsonl"}, `{"messages":[{"role":"user","content":"a"}]}` + "\n{oops\n", ExitUsage, "line 2:"},
		{"template no messages", []string{"template", "--jsonl"}, "{}\n", ExitUsage, "line 1:"},
		{"template without chat_template", []string{"template", "--model", noTemplate}, "{}", ExitUsage, "chat_template"},
		{"missing model dir", []string{"tokenize", "--model", filepath.Join(noTemplate, "absent")}, "x", ExitFailure, "--model"},
		{"stray argument", []string{"tokenize", "extra"}, "", ExitUsage, "unexpected argument"},
		{"stray template argument", []string{"template", "x.json"}, "", ExitUsage, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.stdin, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.wantCode, errOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr %q does not name %q", errOut, tc.wantErr)
			}
		})
	}
}
