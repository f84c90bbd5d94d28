package main

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

func init() { register(newGenerateCmd) }

type generateOptions struct {
	Model          string
	Prompt         string
	System         string
	MaxTokens      int
	EnableThinking bool
	Seed           uint64
	Greedy         bool
	Params         sampling.Params
	Cluster        clusterFlags
	Server         string
	Timeout        time.Duration

	changed func(string) bool
}

// Complete fills sampling parameters the user did not set with Qwen3's
// recommended defaults for the chosen mode; without --seed the seed is
// random (as vLLM and OpenAI draw fresh randomness for an unseeded
// request), with it exactly the value given.
func (o *generateOptions) Complete() {
	def := sampling.ThinkingDefaults()
	if !o.EnableThinking {
		def = sampling.NonThinkingDefaults()
	}
	if o.Greedy {
		def = sampling.Greedy()
	}
	set := func(flag string, dst *float32, v float32) {
		if !o.changed(flag) {
			*dst = v
		}
	}
	set("temperature", &o.Params.Temperature, def.Temperature)
	set("top-p", &o.Params.TopP, def.TopP)
	set("min-p", &o.Params.MinP, def.MinP)
	set("presence-penalty", &o.Params.PresencePenalty, def.PresencePenalty)
	set("frequency-penalty", &o.Params.FrequencyPenalty, def.FrequencyPenalty)
	set("repetition-penalty", &o.Params.RepetitionPenalty, def.RepetitionPenalty)
	if !o.changed("top-k") {
		o.Params.TopK = def.TopK
	}
	o.Params.Seed = o.Seed
	if !o.changed("seed") {
		o.Params.Seed = sampling.RandomSeed()
	}
}

func (o *generateOptions) Validate() error {
	if o.Prompt == "" {
		return usagef("--prompt is required")
	}
	if o.MaxTokens <= 0 {
		return usagef("--max-tokens must be positive, got %d", o.MaxTokens)
	}
	if err := o.Params.Validate(); err != nil {
		return &usageError{err}
	}
	return o.Cluster.Validate()
}

func newGenerateCmd(s IOStreams) *cobra.Command {
	o := &generateOptions{}
	cmd := &cobra.Command{
		Use:   "generate --prompt TEXT [--model DIR]",
		Short: "Generate a chat reply, streamed to stdout (the tiny demo model when --model is absent)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.changed = func(f string) bool { return cmd.Flags().Changed(f) }
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), s)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model directory (Hugging Face layout); default: the tiny demo model, created once in the cache directory")
	f.StringVar(&o.Prompt, "prompt", "", "the user message")
	f.StringVar(&o.System, "system", "", "an optional system message")
	f.IntVar(&o.MaxTokens, "max-tokens", 256, "maximum number of generated tokens")
	f.BoolVar(&o.EnableThinking, "enable-thinking", true, "let the model think inside <think>…</think> before answering")
	f.Uint64Var(&o.Seed, "seed", 0, "sampling seed (default: a random one per run)")
	f.BoolVar(&o.Greedy, "greedy", false, "greedy decoding (discouraged in thinking mode)")
	f.Float32Var(&o.Params.Temperature, "temperature", 0, "sampling temperature (below 1e-5 = greedy); default per mode: 0.6 thinking, 0.7 otherwise")
	f.Float32Var(&o.Params.TopP, "top-p", 0, "nucleus sampling; default per mode: 0.95 thinking, 0.8 otherwise")
	f.IntVar(&o.Params.TopK, "top-k", 0, "keep the k most likely tokens and those tied with the k-th (0 or -1 = off); default 20")
	f.Float32Var(&o.Params.MinP, "min-p", 0, "drop tokens below min-p × the top probability; default 0")
	f.Float32Var(&o.Params.PresencePenalty, "presence-penalty", 0, "subtract from the logit of every token generated so far")
	f.Float32Var(&o.Params.FrequencyPenalty, "frequency-penalty", 0, "subtract this times its count from the logit of every token generated so far")
	f.Float32Var(&o.Params.RepetitionPenalty, "repetition-penalty", 1, "divide positive (multiply negative) logits of tokens seen so far")
	f.StringVar(&o.Server, "server", "", "generate through a running cluster's gRPC API at this address (see moemesh local)")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "with --server: deadline of the whole generation")
	o.Cluster.AddFlags(cmd)
	return cmd
}

func (o *generateOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Server != "" {
		return o.runRemote(ctx, s)
	}
	dir := o.Model
	if dir == "" {
		var err error
		if dir, err = demoModelDir(s); err != nil {
			return err
		}
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return err
	}
	var msgs []tokenizer.Message
	if o.System != "" {
		msgs = append(msgs, tokenizer.Message{Role: "system", Content: o.System})
	}
	msgs = append(msgs, tokenizer.Message{Role: "user", Content: o.Prompt})
	thinking := o.EnableThinking
	text, err := tok.ApplyChatTemplate(msgs, tokenizer.TemplateOptions{AddGenerationPrompt: true, EnableThinking: &thinking})
	if err != nil {
		return err
	}
	prompt := toInt32(tok.Encode(text))
	st, pool, closeFn, err := o.Cluster.Stepper(ctx, s, dir)
	if err != nil {
		return err
	}
	defer closeFn()
	smp, err := sampling.New(o.Params)
	if err != nil {
		return &usageError{err}
	}
	var stop []int32
	for _, id := range tok.EOSIDs() {
		stop = append(stop, int32(id))
	}
	w := bufio.NewWriter(s.Out)
	defer w.Flush()
	dec := tok.NewStreamDecoder()
	_, err = scheduler.Generate(ctx, st, pool, []scheduler.GenerateRequest{{Prompt: prompt, MaxTokens: o.MaxTokens, Sampler: smp, Stop: stop}},
		func(_ int, id int32) error {
			if slices.Contains(stop, id) {
				return nil
			}
			if _, err := w.WriteString(dec.Push(int(id))); err != nil {
				return err
			}
			return w.Flush()
		})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, dec.Flush())
	return err
}

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}
