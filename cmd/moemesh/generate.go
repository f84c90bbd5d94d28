package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

func init() { register(newGenerateCmd) }

type generateOptions struct {
	Model          string
	Prompt         string
	PromptFile     string
	PrefillChunk   int
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
	in      io.Reader // stdin, for --prompt-file -
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
	switch {
	case o.Prompt == "" && o.PromptFile == "":
		return usagef("--prompt or --prompt-file is required")
	case o.Prompt != "" && o.PromptFile != "":
		return usagef("--prompt and --prompt-file are exclusive: give one")
	}
	if o.PrefillChunk < 1 {
		return usagef("--prefill-chunk must be at least 1 token, got %d", o.PrefillChunk)
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
	o := &generateOptions{in: s.In}
	cmd := &cobra.Command{
		Use:   "generate (--prompt TEXT | --prompt-file FILE|-) [--model DIR]",
		Short: "Generate a chat reply, streamed to stdout (the tiny demo model when --model is absent)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.changed = func(f string) bool { return cmd.Flags().Changed(f) }
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			if o.PromptFile != "" {
				b, err := readPromptFile(o.PromptFile, o.in)
				if err != nil {
					return err
				}
				if o.Prompt = string(b); o.Prompt == "" {
					return usagef("--prompt-file %s is empty", o.PromptFile)
				}
			}
			return o.Run(cmd.Context(), s)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model directory (Hugging Face layout); default: the tiny demo model, created once in the cache directory")
	f.StringVar(&o.Prompt, "prompt", "", "the user message")
	f.StringVar(&o.PromptFile, "prompt-file", "", "read the user message from this file; - reads standard input")
	f.IntVar(&o.PrefillChunk, "prefill-chunk", defaultPrefillChunk, "prefill the prompt in steps of at most this many tokens")
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
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return err
	}
	if err := checkContext(cfg, &o.Cluster, len(prompt), o.MaxTokens); err != nil {
		return err
	}
	inner, pool, closeFn, err := o.Cluster.Stepper(ctx, s, dir)
	if err != nil {
		return err
	}
	defer closeFn()
	st := chunkPrefill(inner, o.PrefillChunk)
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

// chunkPrefill wraps st so that no step feeds a sequence more than chunk
// tokens: a longer input (a prompt's prefill) runs as successive steps of
// chunk tokens through the same block table, and only the last one's
// logits (or sampled id) are returned. Steps within the budget pass through.
// A scheduler.SamplingStepper stays one.
func chunkPrefill(st model.Stepper, chunk int) model.Stepper {
	c := &chunked{st: st, chunk: chunk}
	if ss, ok := st.(scheduler.SamplingStepper); ok {
		return &chunkedSampling{chunked: c, ss: ss}
	}
	return c
}

type chunked struct {
	st    model.Stepper
	chunk int
}

// feedHeads runs every sequence's tokens but its last chunk, in steps of
// at most chunk tokens per sequence, and returns the batch left to run.
func (c *chunked) feedHeads(ctx context.Context, seqs []model.SeqInput) ([]model.SeqInput, error) {
	rest := slices.Clone(seqs)
	for {
		var head []model.SeqInput
		for i, s := range rest {
			if len(s.Tokens) > c.chunk {
				if s.AllLogits {
					return nil, fmt.Errorf("prefill: sequence %d asks for all %d logits rows of a chunked step", i, len(s.Tokens))
				}
				h := s
				h.Tokens = s.Tokens[:c.chunk]
				head = append(head, h)
				rest[i].Tokens, rest[i].StartPos = s.Tokens[c.chunk:], s.StartPos+c.chunk
			}
		}
		if len(head) == 0 {
			return rest, nil
		}
		if _, err := c.st.Forward(ctx, head); err != nil {
			return nil, err
		}
	}
}

func (c *chunked) Forward(ctx context.Context, seqs []model.SeqInput) ([][]float32, error) {
	rest, err := c.feedHeads(ctx, seqs)
	if err != nil {
		return nil, err
	}
	return c.st.Forward(ctx, rest)
}

type chunkedSampling struct {
	*chunked
	ss scheduler.SamplingStepper
}

func (c *chunkedSampling) ForwardSample(ctx context.Context, seqs []model.SeqInput, params []sampling.Params) ([]int32, error) {
	rest, err := c.feedHeads(ctx, seqs)
	if err != nil {
		return nil, err
	}
	return c.ss.ForwardSample(ctx, rest, params)
}

func (c *chunkedSampling) Release(ids []uint64) { c.ss.Release(ids) }

var _ scheduler.SamplingStepper = (*chunkedSampling)(nil)
