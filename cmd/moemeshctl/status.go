package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

type statusOptions struct {
	g *globalOptions
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{g: g}
	return &cobra.Command{
		Use:   "status",
		Short: "Leader, epoch, layout, workers and coordinators",
		Args:  noArgs,
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
}

func (o *statusOptions) Complete() error { return nil }
func (o *statusOptions) Validate() error { return nil }

func (o *statusOptions) Run() error {
	c, err := o.g.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.g.call()
	defer cancel()
	st, err := c.GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil {
		return rpcErr("get status", err)
	}
	return printDoc(o.g.streams.Out, o.g.format, newStatusDoc(st))
}

// statusDoc is `status -o json|yaml`. Scripts rely on leader, epoch and
// workers[].id and workers[].state.
type statusDoc struct {
	Leader     string       `json:"leader" yaml:"leader"`
	AnsweredBy string       `json:"answered_by" yaml:"answered_by"`
	Epoch      uint64       `json:"epoch" yaml:"epoch"`
	MeshEpoch  uint64       `json:"mesh_epoch" yaml:"mesh_epoch"`
	Model      string       `json:"model" yaml:"model"`
	Layout     layoutDoc    `json:"layout" yaml:"layout"`
	Ready      bool         `json:"ready" yaml:"ready"`
	Reason     string       `json:"reason" yaml:"reason"`
	Operation  *progressDoc `json:"operation" yaml:"operation"`
	// LastOperation is the last one the leader finished (absent when none).
	LastOperation *progressDoc     `json:"last_operation,omitempty" yaml:"last_operation,omitempty"`
	Workers       []workerDoc      `json:"workers" yaml:"workers"`
	Coordinators  []coordinatorDoc `json:"coordinators" yaml:"coordinators"`
}

type layoutDoc struct {
	Workers uint32 `json:"workers" yaml:"workers"`
	TP      uint32 `json:"tp" yaml:"tp"`
	Groups  uint32 `json:"groups" yaml:"groups"`
}

type workerDoc struct {
	ID                  string `json:"id" yaml:"id"`
	State               string `json:"state" yaml:"state"`
	Index               int32  `json:"index" yaml:"index"`
	Group               uint32 `json:"group" yaml:"group"`
	TPRank              uint32 `json:"tp_rank" yaml:"tp_rank"`
	Addr                string `json:"addr" yaml:"addr"`
	Device              string `json:"device" yaml:"device"`
	MemoryBytes         uint64 `json:"memory_bytes" yaml:"memory_bytes"`
	ResidentWeightBytes uint64 `json:"resident_weight_bytes" yaml:"resident_weight_bytes"`
	PlacementEpoch      uint64 `json:"placement_epoch" yaml:"placement_epoch"`
	ExpertSlots         uint32 `json:"expert_slots" yaml:"expert_slots"`
	Error               string `json:"error" yaml:"error"`
}

type coordinatorDoc struct {
	ID       string `json:"id" yaml:"id"`
	GRPCAddr string `json:"grpc_addr" yaml:"grpc_addr"`
	HTTPAddr string `json:"http_addr" yaml:"http_addr"`
	Leader   bool   `json:"leader" yaml:"leader"`
}

// progressDoc is an operation's progress (OperationProgress).
type progressDoc struct {
	Kind          string `json:"kind" yaml:"kind"`
	Phase         string `json:"phase" yaml:"phase"`
	FromEpoch     uint64 `json:"from_epoch" yaml:"from_epoch"`
	ToEpoch       uint64 `json:"to_epoch" yaml:"to_epoch"`
	WorkersReady  uint32 `json:"workers_ready" yaml:"workers_ready"`
	WorkersTotal  uint32 `json:"workers_total" yaml:"workers_total"`
	Worker        string `json:"worker" yaml:"worker"`
	Message       string `json:"message" yaml:"message"`
	StartedUnixMS int64  `json:"started_unix_ms" yaml:"started_unix_ms"`
}

// stateNames are the lowercase words of `status`; scripts rely on them.
var stateNames = map[adminv1.WorkerState]string{
	adminv1.WorkerState_WORKER_STATE_UNSPECIFIED: "unknown",
	adminv1.WorkerState_WORKER_STATE_SERVING:     "serving",
	adminv1.WorkerState_WORKER_STATE_LOADING:     "loading",
	adminv1.WorkerState_WORKER_STATE_SPARE:       "spare",
	adminv1.WorkerState_WORKER_STATE_CORDONED:    "cordoned",
	adminv1.WorkerState_WORKER_STATE_LOST:        "lost",
}

func stateName(s adminv1.WorkerState) string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", int32(s))
}

var phaseNames = map[adminv1.Phase]string{
	adminv1.Phase_PHASE_UNSPECIFIED: "unknown",
	adminv1.Phase_PHASE_PREPARING:   "preparing",
	adminv1.Phase_PHASE_SWITCHING:   "switching",
	adminv1.Phase_PHASE_COMMITTING:  "committing",
	adminv1.Phase_PHASE_DONE:        "done",
	adminv1.Phase_PHASE_ABORTED:     "aborted",
}

func phaseName(p adminv1.Phase) string {
	if n, ok := phaseNames[p]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", int32(p))
}

func newWorkerDoc(w *adminv1.WorkerStatus) workerDoc {
	return workerDoc{ID: w.GetId(), State: stateName(w.GetState()), Index: w.GetIndex(), Group: w.GetGroup(),
		TPRank: w.GetTpRank(), Addr: w.GetAddr(), Device: w.GetDevice(), MemoryBytes: w.GetMemoryBytes(),
		ResidentWeightBytes: w.GetResidentWeightBytes(), PlacementEpoch: w.GetPlacementEpoch(),
		ExpertSlots: w.GetExpertSlots(), Error: w.GetError()}
}

func newProgressDoc(p *adminv1.OperationProgress) *progressDoc {
	if p == nil {
		return nil
	}
	return &progressDoc{Kind: p.GetKind(), Phase: phaseName(p.GetPhase()), FromEpoch: p.GetFromEpoch(),
		ToEpoch: p.GetToEpoch(), WorkersReady: p.GetWorkersReady(), WorkersTotal: p.GetWorkersTotal(),
		Worker: p.GetWorker(), Message: p.GetMessage(), StartedUnixMS: p.GetStartedUnixMs()}
}

func newStatusDoc(st *adminv1.GetStatusResponse) *statusDoc {
	d := &statusDoc{Leader: st.GetLeader(), AnsweredBy: st.GetAnsweredBy(), Epoch: st.GetEpoch(),
		MeshEpoch: st.GetMeshEpoch(), Model: st.GetModel(),
		Layout: layoutDoc{Workers: st.GetLayoutWorkers(), TP: st.GetTp(), Groups: st.GetGroups()},
		Ready:  st.GetReady(), Reason: st.GetReason(), Operation: newProgressDoc(st.GetOperation()),
		LastOperation: newProgressDoc(st.GetLastOperation()),
		Workers:       []workerDoc{}, Coordinators: []coordinatorDoc{}}
	for _, w := range st.GetWorkers() {
		d.Workers = append(d.Workers, newWorkerDoc(w))
	}
	for _, c := range st.GetCoordinators() {
		d.Coordinators = append(d.Coordinators, coordinatorDoc{ID: c.GetId(), GRPCAddr: c.GetGrpcAddr(),
			HTTPAddr: c.GetHttpAddr(), Leader: c.GetLeader()})
	}
	return d
}

func (d *progressDoc) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", dash(d.Kind))
	if d.Worker != "" {
		fmt.Fprintf(&b, " %s", d.Worker)
	}
	fmt.Fprintf(&b, ": %s", d.Phase)
	if d.FromEpoch != 0 || d.ToEpoch != 0 {
		fmt.Fprintf(&b, ", epoch %d -> %d", d.FromEpoch, d.ToEpoch)
	}
	if d.WorkersTotal > 0 {
		fmt.Fprintf(&b, ", %d/%d workers ready", d.WorkersReady, d.WorkersTotal)
	}
	if d.Message != "" {
		fmt.Fprintf(&b, ": %s", d.Message)
	}
	return b.String()
}

func (d *statusDoc) writeTable(w io.Writer) error {
	t := table(w)
	leader := dash(d.Leader)
	if d.AnsweredBy != "" && d.AnsweredBy != d.Leader {
		leader += " (answered by " + d.AnsweredBy + ")"
	}
	row(t, "leader:", leader)
	row(t, "model:", dash(d.Model))
	row(t, "epoch:", fmt.Sprintf("%d (mesh %d)", d.Epoch, d.MeshEpoch))
	row(t, "layout:", fmt.Sprintf("%d workers = %d groups x tp %d", d.Layout.Workers, d.Layout.Groups, d.Layout.TP))
	ready := "yes"
	if !d.Ready {
		ready = "no: " + dash(d.Reason)
	}
	row(t, "ready:", ready)
	op := "none"
	if d.Operation != nil {
		op = d.Operation.line()
	}
	row(t, "operation:", op)
	if d.LastOperation != nil {
		row(t, "last operation:", d.LastOperation.line())
	}
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = table(w)
	row(t, "WORKER", "STATE", "INDEX", "GROUP/RANK", "ADDR", "DEVICE", "MEMORY", "RESIDENT", "EPOCH", "SLOTS", "ERROR")
	for _, x := range d.Workers {
		index, place := "-", "-"
		if x.Index >= 0 {
			index, place = fmt.Sprint(x.Index), fmt.Sprintf("%d/%d", x.Group, x.TPRank)
		}
		row(t, x.ID, x.State, index, place, dash(x.Addr), dash(x.Device), humanBytes(x.MemoryBytes),
			humanBytes(x.ResidentWeightBytes), x.PlacementEpoch, x.ExpertSlots, dash(x.Error))
	}
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = table(w)
	row(t, "COORDINATOR", "GRPC", "HTTP", "LEADER")
	for _, c := range d.Coordinators {
		leader := "no"
		if c.Leader {
			leader = "yes"
		}
		row(t, c.ID, dash(c.GRPCAddr), dash(c.HTTPAddr), leader)
	}
	return t.Flush()
}
