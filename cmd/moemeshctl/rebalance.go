package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/client"
	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// dryRunModes are the values of --dry-run: none applies nothing by
// itself (--apply does), server asks the leader for the plan and shows
// it. A bare --dry-run means server.
var dryRunModes = []string{"none", "server"}

type rebalanceOptions struct {
	g        *globalOptions
	DryRun   string
	Apply    bool
	MaxMoves uint32
	Yes      bool
}

func newRebalanceCmd(g *globalOptions) *cobra.Command {
	o := &rebalanceOptions{g: g}
	cmd := &cobra.Command{
		Use:   "rebalance (--dry-run | --apply [--yes])",
		Short: "Plan a rebalance of the experts from the load statistics, or apply it live",
		Long: "Plan a rebalance of the experts from the load statistics (--dry-run), or apply\n" +
			"it live (--apply): the plan is shown and confirmed (y/N, or --yes), then the\n" +
			"workers load the new expert copies while serving, steps switch to the new\n" +
			"epoch at a step boundary, and the old copies are freed. --apply needs the\n" +
			"admin token.",
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DryRun, "dry-run", "none", "show the plan without applying it: "+strings.Join(dryRunModes, " or ")+" (a bare --dry-run is server)")
	f.Lookup("dry-run").NoOptDefVal = "server"
	f.BoolVar(&o.Apply, "apply", false, "apply the plan live (needs the admin token)")
	f.Uint32Var(&o.MaxMoves, "max-moves", 0, "bound on the expert copies the plan loads (0: the coordinator's --rebalance-max-moves)")
	f.BoolVarP(&o.Yes, "yes", "y", false, "with --apply: do not ask for confirmation")
	return cmd
}

func (o *rebalanceOptions) Complete() error { return nil }

func (o *rebalanceOptions) Validate() error {
	known := false
	for _, m := range dryRunModes {
		known = known || o.DryRun == m
	}
	switch {
	case !known:
		return usagef("--dry-run %q: valid values are %s", o.DryRun, strings.Join(dryRunModes, ", "))
	case o.DryRun != "none" && o.Apply:
		return usagef("--dry-run=%s and --apply are exclusive", o.DryRun)
	case o.DryRun == "none" && !o.Apply:
		return usagef("rebalance needs --dry-run (show the plan) or --apply (apply it)")
	case o.Yes && !o.Apply:
		return usagef("--yes goes with --apply only")
	case o.Apply:
		return o.g.requireToken()
	}
	return nil
}

func (o *rebalanceOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	resp, err := c.PlanRebalance(ctx, &adminv1.PlanRebalanceRequest{MaxMoves: o.MaxMoves})
	cancel()
	if err != nil {
		return rpcErr("plan rebalance", err)
	}
	plan := resp.GetPlan()
	if plan == nil {
		return fmt.Errorf("plan rebalance: the coordinator answered no plan")
	}
	doc := newPlanDoc(plan)
	if !o.Apply {
		return printDoc(o.g.streams.Out, o.g.format, doc)
	}

	human := o.g.human()
	if err := doc.writeTable(human); err != nil {
		return err
	}
	if len(plan.GetMoves()) == 0 {
		fmt.Fprintln(human, "nothing to move: the plan keeps the placement as it is")
		return o.g.result(&applyDoc{Plan: doc})
	}
	if !o.Yes {
		q := fmt.Sprintf("Apply %d moves (%s to load) to epoch %d?", len(plan.GetMoves()), humanBytes(plan.GetBytes()), plan.GetFromEpoch())
		if err := confirm(o.g.ctx, o.g.streams.In, human, q); err != nil {
			return err
		}
	}
	wctx, wcancel := o.g.wait()
	defer wcancel()
	st, err := c.ApplyRebalance(wctx, &adminv1.ApplyRebalanceRequest{Plan: plan})
	if err != nil {
		return rpcErr("apply rebalance", err)
	}
	last, err := follow(st, human)
	if err != nil {
		return rpcErr("apply rebalance", err)
	}
	fmt.Fprintf(human, "rebalance done: epoch %d is serving\n", last.GetToEpoch())
	return o.g.result(&applyDoc{Plan: doc, Result: newProgressDoc(last)})
}

// planDoc is `rebalance --dry-run -o json|yaml`. Scripts rely on
// from_epoch, moves, bytes, imbalance_before and imbalance_after.
type planDoc struct {
	FromEpoch       uint64    `json:"from_epoch" yaml:"from_epoch"`
	Moves           []moveDoc `json:"moves" yaml:"moves"`
	Bytes           uint64    `json:"bytes" yaml:"bytes"`
	ImbalanceBefore float64   `json:"imbalance_before" yaml:"imbalance_before"`
	ImbalanceAfter  float64   `json:"imbalance_after" yaml:"imbalance_after"`
	MaxMoves        uint32    `json:"max_moves" yaml:"max_moves"`
	WindowTokens    uint64    `json:"window_tokens" yaml:"window_tokens"`
}

// moveDoc is one move; from_worker is "" for a replica added, to_worker
// "" for a copy dropped.
type moveDoc struct {
	Layer      uint32 `json:"layer" yaml:"layer"`
	Expert     uint32 `json:"expert" yaml:"expert"`
	FromWorker string `json:"from_worker" yaml:"from_worker"`
	ToWorker   string `json:"to_worker" yaml:"to_worker"`
	Bytes      uint64 `json:"bytes" yaml:"bytes"`
}

func newPlanDoc(p *adminv1.RebalancePlan) *planDoc {
	d := &planDoc{FromEpoch: p.GetFromEpoch(), Bytes: p.GetBytes(), ImbalanceBefore: p.GetImbalanceBefore(),
		ImbalanceAfter: p.GetImbalanceAfter(), MaxMoves: p.GetMaxMoves(), WindowTokens: p.GetWindowTokens(),
		Moves: []moveDoc{}}
	for _, m := range p.GetMoves() {
		d.Moves = append(d.Moves, moveDoc{Layer: m.GetLayer(), Expert: m.GetExpert(), FromWorker: m.GetFromWorker(),
			ToWorker: m.GetToWorker(), Bytes: m.GetBytes()})
	}
	return d
}

func (d *planDoc) writeTable(w io.Writer) error {
	bound := "no bound on moves"
	if d.MaxMoves > 0 {
		bound = fmt.Sprintf("at most %d moves", d.MaxMoves)
	}
	fmt.Fprintf(w, "plan against epoch %d (statistics of %d tokens; %s)\n", d.FromEpoch, d.WindowTokens, bound)
	fmt.Fprintf(w, "imbalance %.2f -> %.2f predicted; %d moves, %s to load\n", d.ImbalanceBefore, d.ImbalanceAfter,
		len(d.Moves), humanBytes(d.Bytes))
	if len(d.Moves) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := table(w)
	row(t, "LAYER", "EXPERT", "FROM", "TO", "BYTES")
	for _, m := range d.Moves {
		row(t, m.Layer, m.Expert, dash(m.FromWorker), dash(m.ToWorker), humanBytes(m.Bytes))
	}
	return t.Flush()
}

// applyDoc is `rebalance --apply -o json|yaml`: the plan applied and the
// last progress message (null when there was nothing to move).
type applyDoc struct {
	Plan   *planDoc     `json:"plan" yaml:"plan"`
	Result *progressDoc `json:"result" yaml:"result"`
}

// writeTable is never reached: the table format prints as it goes.
func (d *applyDoc) writeTable(io.Writer) error { return nil }

// human is where the prompt, the plan and progress lines go: the output
// itself in table format, stderr when stdout carries a document.
func (g *globalOptions) human() io.Writer {
	if g.format == formatTable {
		return g.streams.Out
	}
	return g.streams.ErrOut
}

// result prints an operation's document when the format is not table
// (the table format printed its lines already).
func (g *globalOptions) result(doc document) error {
	if g.format == formatTable {
		return nil
	}
	return printDoc(g.streams.Out, g.format, doc)
}

// confirm asks question on w and reads one line of in: y or yes (any
// case) goes on; anything else, or no answer, is errDeclined. A signal
// (ctx done) ends the wait; the read is then left to the process's exit.
func confirm(ctx context.Context, in io.Reader, w io.Writer, question string) error {
	fmt.Fprintf(w, "%s [y/N] ", question)
	type answer struct {
		line string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(in).ReadString('\n')
		got <- answer{line, err}
	}()
	var a answer
	select {
	case <-ctx.Done():
		fmt.Fprintln(w)
		return ctx.Err()
	case a = <-got:
	}
	if a.err != nil && !errors.Is(a.err, io.EOF) {
		return fmt.Errorf("reading the answer: %w", a.err)
	}
	// A terminal echoed the answer and its newline; piped input did not.
	if !terminal(in) {
		fmt.Fprintln(w)
	}
	if v := strings.ToLower(strings.TrimSpace(a.line)); v == "y" || v == "yes" {
		return nil
	}
	return errDeclined
}

// terminal reports whether r is a terminal.
func terminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// follow prints each progress message of st as a line on w and returns
// the last one, with phase DONE.
func follow(st *client.OperationStream, w io.Writer) (*adminv1.OperationProgress, error) {
	defer st.Close()
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.Last(), nil
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintln(w, newProgressDoc(m).line())
	}
}
