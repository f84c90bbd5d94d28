package main

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// fakeAdmin is an AdminService answering canned values.
type fakeAdmin struct {
	adminv1.UnimplementedAdminServiceServer

	status    *adminv1.GetStatusResponse
	placement *adminv1.GetPlacementResponse
	stats     *adminv1.GetExpertStatsResponse
	plan      *adminv1.RebalancePlan
	// progress is what ApplyRebalance and Drain send, then endErr ends them.
	progress []*adminv1.OperationProgress
	endErr   error
	// code, when set, answers every RPC with it (UNAVAILABLE: a standby).
	code codes.Code
	// block makes every RPC wait for its context.
	block bool

	mu      sync.Mutex
	calls   []string
	auth    []string
	applied []*adminv1.RebalancePlan
	drained []string
}

var _ adminv1.AdminServiceServer = (*fakeAdmin)(nil)

func (f *fakeAdmin) enter(ctx context.Context, name string) error {
	f.mu.Lock()
	f.calls = append(f.calls, name)
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if f.code != codes.OK {
		return status.Errorf(f.code, "fake: configured %v", f.code)
	}
	return nil
}

// Calls returns the RPCs served, in order.
func (f *fakeAdmin) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeAdmin) Auth() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.auth)
}

func (f *fakeAdmin) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	if err := f.enter(ctx, "GetStatus"); err != nil {
		return nil, err
	}
	return f.status, nil
}

func (f *fakeAdmin) GetPlacement(ctx context.Context, req *adminv1.GetPlacementRequest) (*adminv1.GetPlacementResponse, error) {
	if err := f.enter(ctx, "GetPlacement"); err != nil {
		return nil, err
	}
	if req.Layer == nil {
		return f.placement, nil
	}
	out := proto.Clone(f.placement).(*adminv1.GetPlacementResponse)
	out.Layers = nil
	for _, l := range f.placement.GetLayers() {
		if l.GetLayer() == req.GetLayer() {
			out.Layers = append(out.Layers, l)
		}
	}
	if len(out.Layers) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "fake: layer %d is not a MoE layer", req.GetLayer())
	}
	return out, nil
}

func (f *fakeAdmin) GetExpertStats(ctx context.Context, _ *adminv1.GetExpertStatsRequest) (*adminv1.GetExpertStatsResponse, error) {
	if err := f.enter(ctx, "GetExpertStats"); err != nil {
		return nil, err
	}
	return f.stats, nil
}

func (f *fakeAdmin) PlanRebalance(ctx context.Context, req *adminv1.PlanRebalanceRequest) (*adminv1.PlanRebalanceResponse, error) {
	if err := f.enter(ctx, "PlanRebalance"); err != nil {
		return nil, err
	}
	p := proto.Clone(f.plan).(*adminv1.RebalancePlan)
	if req.GetMaxMoves() > 0 {
		p.MaxMoves = req.GetMaxMoves()
		p.Moves = p.Moves[:min(len(p.Moves), int(req.GetMaxMoves()))]
	}
	return &adminv1.PlanRebalanceResponse{Plan: p}, nil
}

func (f *fakeAdmin) stream(srv grpc.ServerStreamingServer[adminv1.OperationProgress], kind, worker string) error {
	for _, m := range f.progress {
		m = proto.Clone(m).(*adminv1.OperationProgress)
		m.Kind, m.Worker = kind, worker
		if err := srv.Send(m); err != nil {
			return err
		}
	}
	return f.endErr
}

func (f *fakeAdmin) ApplyRebalance(req *adminv1.ApplyRebalanceRequest, srv grpc.ServerStreamingServer[adminv1.OperationProgress]) error {
	if err := f.enter(srv.Context(), "ApplyRebalance"); err != nil {
		return err
	}
	f.mu.Lock()
	f.applied = append(f.applied, req.GetPlan())
	f.mu.Unlock()
	return f.stream(srv, "rebalance", "")
}

func (f *fakeAdmin) Drain(req *adminv1.DrainRequest, srv grpc.ServerStreamingServer[adminv1.OperationProgress]) error {
	if err := f.enter(srv.Context(), "Drain"); err != nil {
		return err
	}
	f.mu.Lock()
	f.drained = append(f.drained, req.GetWorkerId())
	f.mu.Unlock()
	return f.stream(srv, "drain", req.GetWorkerId())
}

func (f *fakeAdmin) Uncordon(ctx context.Context, req *adminv1.UncordonRequest) (*adminv1.UncordonResponse, error) {
	if err := f.enter(ctx, "Uncordon"); err != nil {
		return nil, err
	}
	return &adminv1.UncordonResponse{WasCordoned: req.GetWorkerId() == "w-3"}, nil
}

// serveFake runs f on a loopback port for the test and returns its address.
func serveFake(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// Canned cluster: 2 serving workers (w-0, w-1), a spare, a cordoned and
// a lost one; 3 MoE layers of 8 experts; 2 slots to spare per worker.
var (
	cannedWorkers = []string{"w-0", "w-1"}

	// cannedTokens are the routed tokens per layer and expert.
	cannedTokens = [][]uint64{
		{100, 100, 100, 100, 100, 100, 100, 100},
		{800, 0, 50, 50, 100, 0, 0, 0},
		{10, 20, 30, 40, 400, 300, 200, 0},
	}
)

func cannedStatus() *adminv1.GetStatusResponse {
	return &adminv1.GetStatusResponse{
		Leader: "c-0", AnsweredBy: "c-1", Epoch: 7, MeshEpoch: 3, LayoutWorkers: 2, Tp: 1, Groups: 2,
		Model: "qwen3-tiny", Ready: true,
		Operation: &adminv1.OperationProgress{Kind: "rebalance", Phase: adminv1.Phase_PHASE_PREPARING, FromEpoch: 7,
			ToEpoch: 8, WorkersReady: 1, WorkersTotal: 2, StartedUnixMs: 1700000000000},
		Workers: []*adminv1.WorkerStatus{
			{Id: "w-0", State: adminv1.WorkerState_WORKER_STATE_SERVING, Index: 0, Group: 0, Addr: "10.0.0.1:7100",
				Device: "cpu", MemoryBytes: 24 << 30, ResidentWeightBytes: 3 << 29, PlacementEpoch: 7, ExpertSlots: 12},
			{Id: "w-1", State: adminv1.WorkerState_WORKER_STATE_LOADING, Index: 1, Group: 1, Addr: "10.0.0.2:7100",
				Device: "cuda:0", MemoryBytes: 80 << 30, ResidentWeightBytes: 1 << 30, PlacementEpoch: 6, ExpertSlots: 12},
			{Id: "w-2", State: adminv1.WorkerState_WORKER_STATE_SPARE, Index: -1, Addr: "10.0.0.3:7100", Device: "cpu"},
			{Id: "w-3", State: adminv1.WorkerState_WORKER_STATE_CORDONED, Index: -1, Addr: "10.0.0.4:7100", Device: "cpu"},
			{Id: "w-4", State: adminv1.WorkerState_WORKER_STATE_LOST, Index: -1, Addr: "10.0.0.5:7100",
				Error: "load epoch 7: out of memory"},
		},
		Coordinators: []*adminv1.CoordinatorStatus{
			{Id: "c-0", GrpcAddr: "10.0.1.1:50051", HttpAddr: "10.0.1.1:8080", Leader: true},
			{Id: "c-1", GrpcAddr: "10.0.1.2:50051", HttpAddr: "10.0.1.2:8080"},
		},
	}
}

func cannedPlacement() *adminv1.GetPlacementResponse {
	p := &adminv1.GetPlacementResponse{Epoch: 7, WorkerIds: cannedWorkers, Experts: 8, SlotsPerWorker: 6}
	for l := range cannedTokens {
		p.Layers = append(p.Layers, &adminv1.LayerPlacement{Layer: uint32(l), Workers: []*adminv1.WorkerExperts{
			{Experts: []uint32{0, 1, 2, 3}}, {Experts: []uint32{4, 5, 6, 7}}}})
	}
	// Layer 1 carries a replica of its hot expert 0 on w-1.
	p.Layers[1].Workers[1].Experts = []uint32{0, 4, 5, 6, 7}
	return p
}

func cannedStats() *adminv1.GetExpertStatsResponse {
	s := &adminv1.GetExpertStatsResponse{Epoch: 7, WindowMs: 60000, WindowTokens: 1500, Imbalance: 1.3,
		WorkerIds: cannedWorkers, WorkersReporting: 2, WorkerLoad: []float64{2150, 1250}}
	loads := [][]float64{{400, 400}, {600, 400}, {100, 900}}
	imb := []float64{1, 1.2, 1.8}
	for l, tok := range cannedTokens {
		s.Layers = append(s.Layers, &adminv1.LayerStats{Layer: uint32(l), Tokens: tok, WorkerLoad: loads[l], Imbalance: imb[l]})
	}
	return s
}

func cannedPlan() *adminv1.RebalancePlan {
	return &adminv1.RebalancePlan{FromEpoch: 7, Bytes: 3 << 20, ImbalanceBefore: 1.3, ImbalanceAfter: 1.05,
		MaxMoves: 8, WindowTokens: 1500, Moves: []*adminv1.Move{
			{Layer: 2, Expert: 4, FromWorker: "w-1", ToWorker: "w-0", Bytes: 1 << 20},
			{Layer: 2, Expert: 5, ToWorker: "w-0", Bytes: 1 << 20},
			{Layer: 1, Expert: 0, FromWorker: "w-1"},
			{Layer: 1, Expert: 4, FromWorker: "w-1", ToWorker: "w-0", Bytes: 1 << 20},
		}}
}

func cannedProgress() []*adminv1.OperationProgress {
	phase := func(p adminv1.Phase, ready uint32, msg string) *adminv1.OperationProgress {
		return &adminv1.OperationProgress{Phase: p, FromEpoch: 7, ToEpoch: 8, WorkersReady: ready, WorkersTotal: 2,
			Message: msg, StartedUnixMs: 1700000000000}
	}
	return []*adminv1.OperationProgress{
		phase(adminv1.Phase_PHASE_PREPARING, 0, "loading 3 expert copies"),
		phase(adminv1.Phase_PHASE_PREPARING, 1, ""),
		phase(adminv1.Phase_PHASE_SWITCHING, 2, ""),
		phase(adminv1.Phase_PHASE_COMMITTING, 2, "freeing old slots"),
		phase(adminv1.Phase_PHASE_DONE, 2, ""),
	}
}

func newCannedFake() *fakeAdmin {
	return &fakeAdmin{status: cannedStatus(), placement: cannedPlacement(), stats: cannedStats(), plan: cannedPlan(),
		progress: cannedProgress()}
}

// result is one run of the CLI.
type result struct {
	code        int
	out, errOut string
}

// runCLI runs moemeshctl with env as its environment and in as its input.
func runCLI(t *testing.T, env map[string]string, in string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	s := IOStreams{In: strings.NewReader(in), Out: &out, ErrOut: &errOut}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := run(ctx, args, s, func(k string) string { return env[k] })
	return result{code: code, out: out.String(), errOut: errOut.String()}
}
