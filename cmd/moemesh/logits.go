package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/scheduler"
)

func init() { register(newLogitsCmd) }

type logitsOptions struct {
	Model        string
	Tokens       string
	PromptFile   string
	PrefillChunk int
	Cluster      clusterFlags
	ids          []int32
	in           io.Reader // stdin, for --prompt-file -
}

func (o *logitsOptions) Complete() error {
	src, text := "--tokens", o.Tokens
	if o.PromptFile != "" {
		b, err := readPromptFile(o.PromptFile, o.in)
		if err != nil {
			return err
		}
		src, text = "--prompt-file", string(b)
	}
	// Ids are separated by commas and/or white space (a file may hold one per line).
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return usagef("%s holds no token ids", src)
	}
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil || v < 0 {
			return usagef("%s: item %d (%q) is not a non-negative integer", src, i+1, f)
		}
		o.ids = append(o.ids, int32(v))
	}
	return nil
}

func (o *logitsOptions) Validate() error {
	if o.Model == "" {
		return usagef("--model is required")
	}
	switch {
	case o.Tokens == "" && o.PromptFile == "":
		return usagef("--tokens (comma-separated ids) or --prompt-file is required")
	case o.Tokens != "" && o.PromptFile != "":
		return usagef("--tokens and --prompt-file are exclusive: give one")
	}
	if o.PrefillChunk < 1 {
		return usagef("--prefill-chunk must be at least 1 token, got %d", o.PrefillChunk)
	}
	return o.Cluster.Validate()
}

// maxPromptFileBytes bounds --prompt-file: 64 MiB is ~16M tokens of text,
// beyond any context.
const maxPromptFileBytes = 64 << 20

// readPromptFile reads path, or stdin for "-", refusing more than
// maxPromptFileBytes before it holds them.
func readPromptFile(path string, stdin io.Reader) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		if stdin == nil {
			return nil, usagef("--prompt-file -: no standard input")
		}
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("--prompt-file: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPromptFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--prompt-file %s: %w", path, err)
	}
	if len(b) > maxPromptFileBytes {
		return nil, usagef("--prompt-file %s is larger than %d MiB", path, maxPromptFileBytes>>20)
	}
	return b, nil
}

// errContextFull is wrapped by checkContext's errors; one beyond the KV
// cache --context sizes wraps scheduler.ErrKVFull too.
var errContextFull = errors.New("the prompt does not fit")

// checkContext reports, before any work, a sequence of need positions
// (prompt tokens, plus those to generate) that the model cannot take: the
// model's context (max_position_embeddings, or YaRN's factor × original)
// bounds it, and so does the KV cache --context sizes. With --context
// unset the cache grows to the sequence (the memory check of the cluster
// flags then says what fits on this machine).
func checkContext(cfg *model.Config, c *clusterFlags, prompt, gen int) error {
	need, limit := prompt+gen, cfg.ContextLength()
	what := fmt.Sprintf("max_position_embeddings %d", cfg.MaxPositionEmbeddings)
	if p := cfg.Rope(); !p.Plain() && limit > cfg.MaxPositionEmbeddings {
		what = fmt.Sprintf("rope_scaling %s", p)
	}
	if need > limit {
		if prompt > limit {
			return &usageError{fmt.Errorf("%w: the prompt is %d tokens and the model's context is %d positions (%s): at most %d prompt tokens fit", errContextFull, prompt, limit, what, limit)}
		}
		return &usageError{fmt.Errorf("%w: the prompt is %d tokens, %d more to generate make %d, beyond the model's context of %d positions (%s): at most %d tokens can be generated", errContextFull, prompt, gen, need, limit, what, limit-prompt)}
	}
	if need <= c.ContextTokens {
		return nil
	}
	if c.contextSet == nil || c.contextSet() {
		return &usageError{fmt.Errorf("%w (%w): the prompt is %d tokens and %d more are to be generated, %d in all, but --context is %d: raise --context to %d (the model takes up to %d)", errContextFull, scheduler.ErrKVFull, prompt, gen, need, c.ContextTokens, need, limit)}
	}
	c.ContextTokens = (need + kvBlockSize - 1) / kvBlockSize * kvBlockSize
	c.ContextTokens = min(c.ContextTokens, limit)
	return nil
}

// prefillLogits feeds ids to st in chunks of at most chunk tokens, all
// rows' logits kept: a long prompt's activations then stay bounded by the
// chunk, not the prompt.
func prefillLogits(ctx context.Context, st model.Stepper, blocks []int32, ids []int32, chunk int) ([][]float32, error) {
	rows := make([][]float32, 0, len(ids))
	for lo := 0; lo < len(ids); lo += chunk {
		hi := min(len(ids), lo+chunk)
		r, err := st.Forward(ctx, []model.SeqInput{{Tokens: ids[lo:hi], StartPos: lo, Blocks: blocks, AllLogits: true}})
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func newLogitsCmd(s IOStreams) *cobra.Command {
	o := &logitsOptions{in: s.In}
	cmd := &cobra.Command{
		Use:   "logits --model DIR (--tokens 1,2,3 | --prompt-file FILE|-)",
		Short: `Print the logits of every position as JSON {"logits": [[...], ...]}`,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), s)
		},
	}
	cmd.Flags().StringVar(&o.Model, "model", "", "model directory (Hugging Face layout)")
	cmd.Flags().StringVar(&o.Tokens, "tokens", "", "comma-separated token ids")
	cmd.Flags().StringVar(&o.PromptFile, "prompt-file", "", "read the token ids (separated by commas or white space) from this file; - reads standard input")
	cmd.Flags().IntVar(&o.PrefillChunk, "prefill-chunk", defaultPrefillChunk, "feed the prompt in steps of at most this many tokens")
	o.Cluster.AddFlags(cmd)
	return cmd
}

func (o *logitsOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := model.LoadConfig(o.Model)
	if err != nil {
		return err
	}
	if err := checkTokenIDs(o.ids, cfg.VocabSize); err != nil {
		return err
	}
	if err := checkContext(cfg, &o.Cluster, len(o.ids), 0); err != nil {
		return err
	}
	st, pool, closeFn, err := o.Cluster.Stepper(ctx, s, o.Model)
	if err != nil {
		return err
	}
	defer closeFn()
	seq := &scheduler.Seq{}
	if err := pool.Reserve(seq, len(o.ids)); err != nil {
		return err
	}
	defer pool.Release(seq)
	rows, err := prefillLogits(ctx, st, seq.Blocks, o.ids, o.PrefillChunk)
	if err != nil {
		return err
	}
	return writeLogitsJSON(s, rows)
}

// defaultPrefillChunk is --prefill-chunk's default: big enough that a
// prompt's weight reads are amortised, small enough that a long prompt's
// activations stay bounded (2,048 × the vocabulary in logits at most).
const defaultPrefillChunk = 2048

// checkTokenIDs reports, as a usage error, the first id of --tokens that is
// not below the model's vocab_size.
func checkTokenIDs(ids []int32, vocab int) error {
	for i, id := range ids {
		if int(id) >= vocab {
			return usagef("--tokens: item %d, token id %d, is not below the model's vocabulary size %d (vocab_size in config.json)", i+1, id, vocab)
		}
	}
	return nil
}

// writeLogitsJSON writes {"logits": [[...], ...]} with each value in the
// shortest form that reads back as the same float32.
func writeLogitsJSON(s IOStreams, rows [][]float32) error {
	w := bufio.NewWriterSize(s.Out, 1<<16)
	buf := make([]byte, 0, 32)
	w.WriteString(`{"logits": [`)
	for i, r := range rows {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteByte('[')
		for j, v := range r {
			if j > 0 {
				w.WriteString(", ")
			}
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("logit %d of position %d is %v: the model produced a non-finite value", j, i, v)
			}
			buf = strconv.AppendFloat(buf[:0], float64(v), 'g', -1, 32)
			w.Write(buf)
		}
		w.WriteByte(']')
	}
	w.WriteString("]}\n")
	return w.Flush()
}
