package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/scheduler"
)

func init() { register(newLogitsCmd) }

type logitsOptions struct {
	Model   string
	Tokens  string
	Cluster clusterFlags
	ids     []int32
}

func (o *logitsOptions) Complete() error {
	for i, f := range strings.Split(o.Tokens, ",") {
		f = strings.TrimSpace(f)
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil || v < 0 {
			return usagef("--tokens: item %d (%q) is not a non-negative integer", i+1, f)
		}
		o.ids = append(o.ids, int32(v))
	}
	return nil
}

func (o *logitsOptions) Validate() error {
	if o.Model == "" {
		return usagef("--model is required")
	}
	if o.Tokens == "" {
		return usagef("--tokens is required (comma-separated ids)")
	}
	return o.Cluster.Validate()
}

func newLogitsCmd(s IOStreams) *cobra.Command {
	o := &logitsOptions{}
	cmd := &cobra.Command{
		Use:   "logits --model DIR --tokens 1,2,3",
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
	rows, err := st.Forward(ctx, []model.SeqInput{{Tokens: o.ids, Blocks: seq.Blocks, AllLogits: true}})
	if err != nil {
		return err
	}
	return writeLogitsJSON(s, rows)
}

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
