package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

type drainOptions struct {
	g      *globalOptions
	Worker string
	Yes    bool
}

func newDrainCmd(g *globalOptions) *cobra.Command {
	o := &drainOptions{g: g}
	cmd := &cobra.Command{
		Use:   "drain WORKER",
		Short: "Move a worker's experts and heads away, then cordon it",
		Long: "Move a worker's experts and heads to the other workers or a spare by the live\n" +
			"two-phase path, then cordon it: it serves nothing and may be stopped without a\n" +
			"request failing. Shows the worker and asks y/N unless --yes. Needs the admin token.",
		Args: oneWorker,
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (o *drainOptions) Complete(args []string) error {
	o.Worker = strings.TrimSpace(args[0])
	return nil
}

func (o *drainOptions) Validate() error { return o.g.requireToken() }

func (o *drainOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	st, err := c.GetStatus(ctx, &adminv1.GetStatusRequest{})
	cancel()
	if err != nil {
		return rpcErr("get status", err)
	}
	var target *adminv1.WorkerStatus
	var ids []string
	for _, w := range st.GetWorkers() {
		ids = append(ids, w.GetId())
		if w.GetId() == o.Worker {
			target = w
		}
	}
	if target == nil {
		return rpcErr("drain", status.Errorf(codes.NotFound, "worker %q is not in the cluster (workers: %s)", o.Worker, strings.Join(ids, ", ")))
	}
	wd := newWorkerDoc(target)
	human := o.g.human()
	place := "outside the layout"
	if wd.Index >= 0 {
		place = fmt.Sprintf("index %d (group %d, rank %d)", wd.Index, wd.Group, wd.TPRank)
	}
	fmt.Fprintf(human, "drain %s: %s, %s, device %s, %d expert slots, %s resident\n",
		wd.ID, wd.State, place, dash(wd.Device), wd.ExpertSlots, humanBytes(wd.ResidentWeightBytes))
	fmt.Fprintf(human, "its experts and heads move to the other workers or a spare; then it is cordoned and serves nothing until `moemeshctl uncordon %s`\n", wd.ID)
	if !o.Yes {
		if err := confirm(o.g.ctx, o.g.streams.In, human, fmt.Sprintf("Drain %s?", wd.ID)); err != nil {
			return err
		}
	}
	wctx, wcancel := o.g.wait()
	defer wcancel()
	stream, err := c.Drain(wctx, &adminv1.DrainRequest{WorkerId: o.Worker})
	if err != nil {
		return rpcErr("drain", err)
	}
	last, err := follow(stream, human)
	if err != nil {
		return rpcErr("drain", err)
	}
	fmt.Fprintf(human, "drain done: %s is cordoned and may be stopped; epoch %d is serving\n", wd.ID, last.GetToEpoch())
	return o.g.result(&drainDoc{Worker: wd, Result: newProgressDoc(last)})
}

// drainDoc is `drain -o json|yaml`: the worker as it was, and the last
// progress message.
type drainDoc struct {
	Worker workerDoc    `json:"worker" yaml:"worker"`
	Result *progressDoc `json:"result" yaml:"result"`
}

// writeTable is never reached: the table format prints as it goes.
func (d *drainDoc) writeTable(io.Writer) error { return nil }

type uncordonOptions struct {
	g      *globalOptions
	Worker string
}

func newUncordonCmd(g *globalOptions) *cobra.Command {
	o := &uncordonOptions{g: g}
	return &cobra.Command{
		Use:   "uncordon WORKER",
		Short: "Return a cordoned worker to the pool as a spare",
		Long:  "Return a cordoned worker to the pool: it is a spare, and the next placement may use it. Needs the admin token.",
		Args:  oneWorker,
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
}

func (o *uncordonOptions) Complete(args []string) error {
	o.Worker = strings.TrimSpace(args[0])
	return nil
}

func (o *uncordonOptions) Validate() error { return o.g.requireToken() }

func (o *uncordonOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	defer cancel()
	r, err := c.Uncordon(ctx, &adminv1.UncordonRequest{WorkerId: o.Worker})
	if err != nil {
		return rpcErr("uncordon", err)
	}
	return printDoc(o.g.streams.Out, o.g.format, &uncordonDoc{Worker: o.Worker, WasCordoned: r.GetWasCordoned()})
}

// uncordonDoc is `uncordon -o json|yaml`.
type uncordonDoc struct {
	Worker      string `json:"worker" yaml:"worker"`
	WasCordoned bool   `json:"was_cordoned" yaml:"was_cordoned"`
}

func (d *uncordonDoc) writeTable(w io.Writer) error {
	if d.WasCordoned {
		_, err := fmt.Fprintf(w, "%s uncordoned: it is a spare, and the next placement may use it\n", d.Worker)
		return err
	}
	_, err := fmt.Fprintf(w, "%s was not cordoned: nothing changed\n", d.Worker)
	return err
}
