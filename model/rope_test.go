package model_test

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moemesh/moemesh/model"
)

// goldenRope is the "rope" section of tiny-ay/golden.json: the inverse
// frequencies, correction range and attention factor of the independent
// reference.
type goldenRope struct {
	InvFreq         []float64 `json:"inv_freq"`
	Low             float64   `json:"low"`
	High            float64   `json:"high"`
	AttentionFactor float64   `json:"attention_factor"`
	Factor          float64   `json:"factor"`
	Original        int       `json:"original_max_position_embeddings"`
}

func loadGoldenRope(t *testing.T) goldenRope {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "tiny-ay", "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Rope goldenRope `json:"rope"`
	}
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return g.Rope
}

// yarnConfig is tiny-ay's config with rope_scaling replaced.
func yarnConfig(t *testing.T, scaling string) *model.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "tiny-ay", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["rope_scaling"] = json.RawMessage(scaling)
	data, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.ParseConfig(data)
	if err != nil {
		t.Fatalf("ParseConfig with rope_scaling %s: %v", scaling, err)
	}
	return cfg
}

func TestRopeYaRNMatchesReference(t *testing.T) {
	want := loadGoldenRope(t)
	cfg, err := model.LoadConfig(filepath.Join("testdata", "tiny-ay"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Rope()
	if got.Plain() {
		t.Fatal("tiny-ay: Rope() is plain RoPE, want YaRN")
	}
	opt := cmpopts.EquateApprox(1e-12, 0)
	type sum struct {
		InvFreq                            []float64
		Low, High, AttentionFactor, Factor float64
		Original                           int
	}
	if diff := cmp.Diff(sum{want.InvFreq, want.Low, want.High, want.AttentionFactor, want.Factor, want.Original},
		sum{got.InvFreq, got.Low, got.High, got.AttentionFactor, got.Factor, got.OriginalMaxPos}, opt); diff != "" {
		t.Errorf("YaRN parameters (-want +got):\n%s", diff)
	}
	if n := cfg.ContextLength(); n != 40960 {
		t.Errorf("ContextLength() = %d, want max_position_embeddings 40960 (factor × original is only 256)", n)
	}
}

// TestRopeVariants: the correction ranges are d·ln(orig/(2π·β))/(2·ln θ)
// for β = 32 and 1 worked out by hand (d 64, θ 1e6): orig 64 gives −2.65
// and 5.38, orig 10240 gives 9.10 and 17.13, orig 32768 gives 11.8 and 19.8.
func TestRopeVariants(t *testing.T) {
	ln4 := math.Log(4)
	tests := []struct {
		name       string
		scaling    string
		plain      bool
		factor     float64
		low, high  float64
		attn       float64
		contextLen int
	}{
		{"null", `null`, true, 0, 0, 0, 1, 40960},
		{"default type", `{"rope_type":"default"}`, true, 0, 0, 0, 1, 40960},
		{"legacy type key", `{"type":"yarn","factor":4.0,"original_max_position_embeddings":64}`, false, 4, 0, 6, 0.1*ln4 + 1, 40960},
		{"no truncate", `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,"truncate":false}`, false, 4, 0, 5.376000563337452, 0.1*ln4 + 1, 40960},
		{"explicit attention factor", `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,"attention_factor":1.5}`, false, 4, 0, 6, 1.5, 40960},
		{"zero betas take the defaults", `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,"beta_fast":0,"beta_slow":0}`, false, 4, 0, 6, 0.1*ln4 + 1, 40960},
		{"factor from max over original", `{"rope_type":"yarn","original_max_position_embeddings":10240}`, false, 4, 9, 18, 0.1*ln4 + 1, 40960},
		{"long context from factor", `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}`, false, 4, 11, 20, 0.1*ln4 + 1, 131072},
		{"mscale pair", `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,"mscale":1,"mscale_all_dim":1}`, false, 4, 0, 6, 1, 40960},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := yarnConfig(t, tc.scaling)
			p := cfg.Rope()
			if p.Plain() != tc.plain {
				t.Fatalf("Plain() = %v, want %v", p.Plain(), tc.plain)
			}
			type sum struct {
				Factor, Low, High, Attn float64
				Context                 int
			}
			want := sum{tc.factor, tc.low, tc.high, tc.attn, tc.contextLen}
			got := sum{p.Factor, p.Low, p.High, p.AttentionFactor, cfg.ContextLength()}
			if diff := cmp.Diff(want, got, cmpopts.EquateApprox(1e-12, 0)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// Every inverse frequency lies between the interpolated and the
			// extrapolated one of its pair.
			for j, f := range p.InvFreq {
				ext := math.Pow(cfg.RopeTheta, -float64(2*j)/float64(cfg.HeadDim))
				lo := ext
				if !tc.plain {
					lo = ext / p.Factor
				}
				if f < lo*(1-1e-12) || f > ext*(1+1e-12) {
					t.Errorf("inv_freq[%d] = %g outside [%g, %g]", j, f, lo, ext)
				}
			}
		})
	}
}

func TestRopeRejectsOtherTypes(t *testing.T) {
	for _, typ := range []string{"linear", "dynamic", "longrope", "llama3", "su"} {
		t.Run(typ, func(t *testing.T) {
			for _, key := range []string{"rope_type", "type"} {
				cfg := yarnConfig(t, "null")
				cfg.RopeScaling = json.RawMessage(`{"` + key + `":"` + typ + `","factor":2}`)
				err := cfg.Validate()
				var ce *model.ConfigError
				if !errors.As(err, &ce) || !errors.Is(err, model.ErrBadConfig) {
					t.Fatalf("%s %q: Validate() = %v, want a ConfigError", key, typ, err)
				}
				if ce.Field != "rope_scaling.rope_type" {
					t.Errorf("%s %q: field %q, want rope_scaling.rope_type", key, typ, ce.Field)
				}
			}
		})
	}
}
