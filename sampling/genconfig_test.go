package sampling_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/sampling"
)

func ptr[T any](v T) *T { return &v }

// qwen3GenerationConfig is Qwen3's generation_config.json as shipped.
const qwen3GenerationConfig = `{
  "bos_token_id": 151643,
  "do_sample": true,
  "eos_token_id": [151645, 151643],
  "pad_token_id": 151643,
  "temperature": 0.6,
  "top_k": 20,
  "top_p": 0.95,
  "transformers_version": "4.51.0"
}`

func TestParseGenerationConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    sampling.GenerationConfig
		wantErr bool
	}{
		{"qwen3", qwen3GenerationConfig, sampling.GenerationConfig{Temperature: ptr[float32](0.6), TopP: ptr[float32](0.95), TopK: ptr(20)}, false},
		{"empty object", `{}`, sampling.GenerationConfig{}, false},
		{"nulls are unset", `{"temperature": null, "top_k": null}`, sampling.GenerationConfig{}, false},
		{"every field", `{"temperature": 1.1, "top_p": 0.5, "top_k": -1, "min_p": 0.05, "repetition_penalty": 1.05,
			"presence_penalty": 0.5, "frequency_penalty": -0.25, "max_new_tokens": 2048}`,
			sampling.GenerationConfig{Temperature: ptr[float32](1.1), TopP: ptr[float32](0.5), TopK: ptr(-1), MinP: ptr[float32](0.05),
				RepetitionPenalty: ptr[float32](1.05), PresencePenalty: ptr[float32](0.5), FrequencyPenalty: ptr[float32](-0.25), MaxNewTokens: ptr(2048)}, false},
		{"integral float top_k", `{"top_k": 20.0}`, sampling.GenerationConfig{TopK: ptr(20)}, false},
		{"not JSON", `{"temperature": 0.6`, sampling.GenerationConfig{}, true},
		{"not an object", `[1, 2]`, sampling.GenerationConfig{}, true},
		{"null document", `null`, sampling.GenerationConfig{}, true},
		{"string temperature", `{"temperature": "0.6"}`, sampling.GenerationConfig{}, true},
		{"fractional top_k", `{"top_k": 2.5}`, sampling.GenerationConfig{}, true},
		{"huge top_k", `{"top_k": 1e12}`, sampling.GenerationConfig{}, true},
		{"temperature beyond float32", `{"temperature": 1e300}`, sampling.GenerationConfig{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sampling.ParseGenerationConfig([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, sampling.ErrBadGenerationConfig) {
					t.Fatalf("err = %v, want ErrBadGenerationConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestLoadGenerationConfig(t *testing.T) {
	t.Run("missing file is empty", func(t *testing.T) {
		gc, err := sampling.LoadGenerationConfig(t.TempDir())
		if err != nil || gc != (sampling.GenerationConfig{}) {
			t.Fatalf("LoadGenerationConfig = %+v, %v; want empty, nil", gc, err)
		}
	})
	t.Run("qwen3", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, sampling.GenerationConfigFile), []byte(qwen3GenerationConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		gc, err := sampling.LoadGenerationConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		p, err := sampling.Resolve(gc, sampling.Overrides{Seed: ptr[uint64](1)})
		if err != nil {
			t.Fatal(err)
		}
		if want := withSeed(sampling.ThinkingDefaults(), 1); p != want {
			t.Errorf("Resolve = %+v, want the thinking defaults %+v", p, want)
		}
	})
	t.Run("malformed names the file", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, sampling.GenerationConfigFile)
		if err := os.WriteFile(path, []byte(`{"top_p": }`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := sampling.LoadGenerationConfig(dir)
		if !errors.Is(err, sampling.ErrBadGenerationConfig) {
			t.Fatalf("err = %v, want ErrBadGenerationConfig", err)
		}
		if msg := err.Error(); len(msg) < len(path) || msg[:len(path)] != path {
			t.Errorf("error %q does not start with the file name %q", msg, path)
		}
	})
	t.Run("unreadable is an error", func(t *testing.T) {
		dir := t.TempDir()
		// A directory where the file should be cannot be read as one.
		if err := os.Mkdir(filepath.Join(dir, sampling.GenerationConfigFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := sampling.LoadGenerationConfig(dir); err == nil {
			t.Fatal("LoadGenerationConfig of a directory succeeded")
		}
	})
}

func TestResolve(t *testing.T) {
	qwen := sampling.GenerationConfig{Temperature: ptr[float32](0.6), TopP: ptr[float32](0.95), TopK: ptr(20)}
	seed := ptr[uint64](9)
	for _, tc := range []struct {
		name    string
		gc      sampling.GenerationConfig
		o       sampling.Overrides
		want    sampling.Params
		wantErr bool
	}{
		{"neutral without config", sampling.GenerationConfig{}, sampling.Overrides{Seed: seed},
			sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Seed: 9}, false},
		{"config fills the unset", qwen, sampling.Overrides{Seed: seed},
			sampling.Params{Temperature: 0.6, TopP: 0.95, TopK: 20, RepetitionPenalty: 1, Seed: 9}, false},
		{"request wins", qwen, sampling.Overrides{Temperature: ptr[float32](0), TopK: ptr(-1), MinP: ptr[float32](0.1), Seed: seed},
			sampling.Params{Temperature: 0, TopP: 0.95, TopK: -1, MinP: 0.1, RepetitionPenalty: 1, Seed: 9}, false},
		{"every override", qwen, sampling.Overrides{Temperature: ptr[float32](0.7), TopP: ptr[float32](0.8), MinP: ptr[float32](0.05),
			PresencePenalty: ptr[float32](1), FrequencyPenalty: ptr[float32](0.5), RepetitionPenalty: ptr[float32](1.1), TopK: ptr(5), Seed: ptr[uint64](0)},
			sampling.Params{Temperature: 0.7, TopP: 0.8, MinP: 0.05, PresencePenalty: 1, FrequencyPenalty: 0.5, RepetitionPenalty: 1.1, TopK: 5}, false},
		{"config penalties", sampling.GenerationConfig{RepetitionPenalty: ptr[float32](1.05), PresencePenalty: ptr[float32](0.5), FrequencyPenalty: ptr[float32](0.1)}, sampling.Overrides{Seed: seed},
			sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1.05, PresencePenalty: 0.5, FrequencyPenalty: 0.1, Seed: 9}, false},
		{"bad request value", qwen, sampling.Overrides{FrequencyPenalty: ptr[float32](3)}, sampling.Params{}, true},
		{"bad config value", sampling.GenerationConfig{TopP: ptr[float32](0)}, sampling.Overrides{}, sampling.Params{}, true},
		{"bad config value overridden", sampling.GenerationConfig{TopP: ptr[float32](0)}, sampling.Overrides{TopP: ptr[float32](1), Seed: seed},
			sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Seed: 9}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sampling.Resolve(tc.gc, tc.o)
			if tc.wantErr {
				if !errors.Is(err, sampling.ErrBadParams) {
					t.Fatalf("err = %v, want ErrBadParams", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestResolveRandomSeed: an unset seed is drawn fresh for each request.
func TestResolveRandomSeed(t *testing.T) {
	seen := map[uint64]bool{}
	for range 8 {
		p, err := sampling.Resolve(sampling.GenerationConfig{}, sampling.Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		seen[p.Seed] = true
	}
	// Eight 64-bit draws collide with probability below 2^-58.
	if len(seen) != 8 {
		t.Errorf("8 unseeded requests got %d distinct seeds", len(seen))
	}
}

func FuzzParseGenerationConfig(f *testing.F) {
	for _, s := range []string{qwen3GenerationConfig, `{}`, `{"top_k": 2.5}`, `null`, `{"temperature": null}`, `{"min_p": "x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		gc, err := sampling.ParseGenerationConfig(data)
		if err != nil {
			if !errors.Is(err, sampling.ErrBadGenerationConfig) {
				t.Fatalf("error %v does not wrap ErrBadGenerationConfig", err)
			}
			return
		}
		// Whatever parses resolves to valid params or a clear error.
		p, err := sampling.Resolve(gc, sampling.Overrides{})
		if err == nil {
			if verr := p.Validate(); verr != nil {
				t.Fatalf("Resolve returned invalid params %+v: %v", p, verr)
			}
		} else if !errors.Is(err, sampling.ErrBadParams) {
			t.Fatalf("Resolve error %v does not wrap ErrBadParams", err)
		}
	})
}
