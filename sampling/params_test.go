package sampling_test

import (
	"errors"
	"math"
	"testing"

	"github.com/moemesh/moemesh/sampling"
)

func TestDefaults(t *testing.T) {
	tests := []struct {
		name string
		got  sampling.Params
		want sampling.Params
	}{
		{"greedy", sampling.Greedy(), sampling.Params{TopP: 1, RepetitionPenalty: 1}},
		{"thinking", sampling.ThinkingDefaults(), sampling.Params{Temperature: 0.6, TopP: 0.95, TopK: 20, RepetitionPenalty: 1}},
		{"non-thinking", sampling.NonThinkingDefaults(), sampling.Params{Temperature: 0.7, TopP: 0.8, TopK: 20, RepetitionPenalty: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %+v, want %+v", tc.got, tc.want)
			}
			if err := tc.got.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if _, err := sampling.New(tc.got); err != nil {
				t.Errorf("New() error = %v, want nil", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	with := func(f func(*sampling.Params)) sampling.Params {
		p := sampling.ThinkingDefaults()
		f(&p)
		return p
	}
	tests := []struct {
		name    string
		p       sampling.Params
		wantErr bool
	}{
		{"thinking defaults", sampling.ThinkingDefaults(), false},
		{"zero value", sampling.Params{}, true},
		{"temperature 0", with(func(p *sampling.Params) { p.Temperature = 0 }), false},
		{"temperature large", with(func(p *sampling.Params) { p.Temperature = 100 }), false},
		{"temperature negative", with(func(p *sampling.Params) { p.Temperature = -0.1 }), true},
		{"temperature NaN", with(func(p *sampling.Params) { p.Temperature = nan }), true},
		{"temperature Inf", with(func(p *sampling.Params) { p.Temperature = inf }), true},
		{"top-p 1", with(func(p *sampling.Params) { p.TopP = 1 }), false},
		{"top-p tiny", with(func(p *sampling.Params) { p.TopP = 1e-6 }), false},
		{"top-p 0", with(func(p *sampling.Params) { p.TopP = 0 }), true},
		{"top-p above 1", with(func(p *sampling.Params) { p.TopP = 1.01 }), true},
		{"top-p NaN", with(func(p *sampling.Params) { p.TopP = nan }), true},
		{"min-p 0", with(func(p *sampling.Params) { p.MinP = 0 }), false},
		{"min-p 1", with(func(p *sampling.Params) { p.MinP = 1 }), false},
		{"min-p negative", with(func(p *sampling.Params) { p.MinP = -0.01 }), true},
		{"min-p above 1", with(func(p *sampling.Params) { p.MinP = 1.5 }), true},
		{"min-p NaN", with(func(p *sampling.Params) { p.MinP = nan }), true},
		{"presence 2", with(func(p *sampling.Params) { p.PresencePenalty = 2 }), false},
		{"presence -2", with(func(p *sampling.Params) { p.PresencePenalty = -2 }), false},
		{"presence above 2", with(func(p *sampling.Params) { p.PresencePenalty = 2.5 }), true},
		{"presence below -2", with(func(p *sampling.Params) { p.PresencePenalty = -2.5 }), true},
		{"presence NaN", with(func(p *sampling.Params) { p.PresencePenalty = nan }), true},
		{"repetition 1.3", with(func(p *sampling.Params) { p.RepetitionPenalty = 1.3 }), false},
		{"repetition 0.5", with(func(p *sampling.Params) { p.RepetitionPenalty = 0.5 }), false},
		{"repetition 0", with(func(p *sampling.Params) { p.RepetitionPenalty = 0 }), true},
		{"repetition negative", with(func(p *sampling.Params) { p.RepetitionPenalty = -1 }), true},
		{"repetition Inf", with(func(p *sampling.Params) { p.RepetitionPenalty = inf }), true},
		{"repetition NaN", with(func(p *sampling.Params) { p.RepetitionPenalty = nan }), true},
		{"top-k 0", with(func(p *sampling.Params) { p.TopK = 0 }), false},
		{"top-k huge", with(func(p *sampling.Params) { p.TopK = math.MaxInt }), false},
		{"top-k -1 is off", with(func(p *sampling.Params) { p.TopK = -1 }), false},
		{"top-k below -1", with(func(p *sampling.Params) { p.TopK = -2 }), true},
		{"temperature below the greedy threshold", with(func(p *sampling.Params) { p.Temperature = 1e-6 }), false},
		{"frequency 2", with(func(p *sampling.Params) { p.FrequencyPenalty = 2 }), false},
		{"frequency -2", with(func(p *sampling.Params) { p.FrequencyPenalty = -2 }), false},
		{"frequency above 2", with(func(p *sampling.Params) { p.FrequencyPenalty = 2.5 }), true},
		{"frequency below -2", with(func(p *sampling.Params) { p.FrequencyPenalty = -2.01 }), true},
		{"frequency NaN", with(func(p *sampling.Params) { p.FrequencyPenalty = nan }), true},
		{"any seed", with(func(p *sampling.Params) { p.Seed = math.MaxUint64 }), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if got := errors.Is(err, sampling.ErrBadParams); got != tc.wantErr {
				t.Fatalf("errors.Is(Validate(), ErrBadParams) = %v, want %v (err: %v)", got, tc.wantErr, err)
			}
			if !tc.wantErr && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			s, err := sampling.New(tc.p)
			if got := errors.Is(err, sampling.ErrBadParams); got != tc.wantErr {
				t.Fatalf("errors.Is(New(), ErrBadParams) = %v, want %v", got, tc.wantErr)
			}
			if (s == nil) != tc.wantErr {
				t.Fatalf("New() returned sampler %v, want nil only on error", s)
			}
		})
	}
}

// TestValidateReportsEveryField checks that one error covers every bad field.
func TestValidateReportsEveryField(t *testing.T) {
	err := sampling.Params{Temperature: -1, TopP: 2, MinP: 2, PresencePenalty: 3, FrequencyPenalty: -3, RepetitionPenalty: 0, TopK: -2}.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate() = %v, want a joined error", err)
	}
	if got := len(joined.Unwrap()); got != 7 {
		t.Errorf("Validate() joined %d errors, want 7: %v", got, err)
	}
	for _, e := range joined.Unwrap() {
		if !errors.Is(e, sampling.ErrBadParams) {
			t.Errorf("error %v does not wrap ErrBadParams", e)
		}
	}
}
