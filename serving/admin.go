package serving

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/coordinator/store"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// Admin is what the admin API serves: the control plane's views and live
// operations (control.Coordinator implements it). Progress callbacks are
// called from the operation's goroutine and must not block.
type Admin interface {
	Status(ctx context.Context) (*adminpb.GetStatusResponse, error)
	Placement(ctx context.Context, layer *uint32) (*adminpb.GetPlacementResponse, error)
	ExpertStats(ctx context.Context) (*adminpb.GetExpertStatsResponse, error)
	PlanRebalance(ctx context.Context, maxMoves int) (*adminpb.RebalancePlan, error)
	ApplyRebalance(ctx context.Context, plan *adminpb.RebalancePlan, progress func(*adminpb.OperationProgress)) error
	Drain(ctx context.Context, id string, progress func(*adminpb.OperationProgress)) error
	Uncordon(ctx context.Context, id string) (bool, error)
}

var _ Admin = (*control.Coordinator)(nil)

// admin implements AdminService on an Admin.
type admin struct {
	adminpb.UnimplementedAdminServiceServer
	a     Admin
	keys  *auth // the API keys
	token *auth // the admin token; nil: none
}

var _ adminpb.AdminServiceServer = (*admin)(nil)

// authorize checks the bearer token: operations that change the cluster
// (mutate) need the admin token; reads take the admin token or an API
// key, and are open when the server has neither.
func (s *admin) authorize(ctx context.Context, mutate bool) error {
	var h string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			h = v[0]
		}
	}
	haveKeys := len(s.keys.digests) > 0
	switch {
	case s.token == nil && mutate:
		return status.Error(codes.PermissionDenied, "serving: this coordinator has no admin token (start it with --admin-token-file or $MOEMESH_ADMIN_TOKEN); cluster changes are refused")
	case s.token == nil && !haveKeys:
		return nil // neither admin token nor API keys: reads are open
	}
	if s.token != nil {
		if _, err := s.token.check(h); err == nil {
			return nil
		}
	}
	if _, err := s.keys.check(h); err != nil || !haveKeys {
		return status.Error(codes.Unauthenticated, "serving: the admin token (or, for reads, an API key) is missing or not accepted")
	}
	if mutate {
		return status.Error(codes.PermissionDenied, "serving: an API key cannot change the cluster; this operation needs the admin token")
	}
	return nil
}

// adminStatus maps a control-plane error to its gRPC status.
func adminStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, control.ErrNotLeader), errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, control.ErrNotReady):
		code = codes.NotFound
	case errors.Is(err, control.ErrUnknownWorker):
		code = codes.NotFound
	case errors.Is(err, control.ErrAborted):
		code = codes.Aborted
	case errors.Is(err, control.ErrBusy), errors.Is(err, control.ErrStalePlan), errors.Is(err, control.ErrNoStats),
		errors.Is(err, planner.ErrNotEnough), errors.Is(err, planner.ErrNoFit), errors.Is(err, store.ErrStaleEpoch):
		code = codes.FailedPrecondition
	case errors.Is(err, control.ErrBadPlan):
		code = codes.InvalidArgument
	}
	return status.Error(code, err.Error())
}

// GetStatus implements AdminService.
func (s *admin) GetStatus(ctx context.Context, _ *adminpb.GetStatusRequest) (*adminpb.GetStatusResponse, error) {
	if err := s.authorize(ctx, false); err != nil {
		return nil, err
	}
	resp, err := s.a.Status(ctx)
	return resp, adminStatus(err)
}

// GetPlacement implements AdminService.
func (s *admin) GetPlacement(ctx context.Context, req *adminpb.GetPlacementRequest) (*adminpb.GetPlacementResponse, error) {
	if err := s.authorize(ctx, false); err != nil {
		return nil, err
	}
	resp, err := s.a.Placement(ctx, req.Layer)
	return resp, adminStatus(err)
}

// GetExpertStats implements AdminService.
func (s *admin) GetExpertStats(ctx context.Context, _ *adminpb.GetExpertStatsRequest) (*adminpb.GetExpertStatsResponse, error) {
	if err := s.authorize(ctx, false); err != nil {
		return nil, err
	}
	resp, err := s.a.ExpertStats(ctx)
	return resp, adminStatus(err)
}

// PlanRebalance implements AdminService.
func (s *admin) PlanRebalance(ctx context.Context, req *adminpb.PlanRebalanceRequest) (*adminpb.PlanRebalanceResponse, error) {
	if err := s.authorize(ctx, false); err != nil {
		return nil, err
	}
	plan, err := s.a.PlanRebalance(ctx, int(req.GetMaxMoves()))
	if err != nil {
		return nil, adminStatus(err)
	}
	return &adminpb.PlanRebalanceResponse{Plan: plan}, nil
}

// progressSender forwards an operation's progress to a stream without
// blocking the operation: a slow client misses intermediate messages, never
// the last one (sent after the operation returns).
type progressSender struct {
	ch chan *adminpb.OperationProgress
}

func newProgressSender() *progressSender {
	return &progressSender{ch: make(chan *adminpb.OperationProgress, 64)}
}

func (p *progressSender) offer(m *adminpb.OperationProgress) {
	select {
	case p.ch <- m:
	default:
	}
}

// run calls op, streaming progress to send, and returns op's error.
func (p *progressSender) run(send func(*adminpb.OperationProgress) error, op func(progress func(*adminpb.OperationProgress)) error) error {
	var last *adminpb.OperationProgress
	done := make(chan error, 1)
	go func() { done <- op(func(m *adminpb.OperationProgress) { p.offer(m) }) }()
	for {
		select {
		case m := <-p.ch:
			last = m
			if m.Phase != adminpb.Phase_PHASE_DONE && m.Phase != adminpb.Phase_PHASE_ABORTED {
				_ = send(m)
			}
		case err := <-done:
			for more := true; more; { // what was queued before the end
				select {
				case m := <-p.ch:
					last = m
					if m.Phase != adminpb.Phase_PHASE_DONE && m.Phase != adminpb.Phase_PHASE_ABORTED {
						_ = send(m)
					}
				default:
					more = false
				}
			}
			if err != nil {
				return adminStatus(err)
			}
			if last != nil {
				return send(last)
			}
			return nil
		}
	}
}

// ApplyRebalance implements AdminService.
func (s *admin) ApplyRebalance(req *adminpb.ApplyRebalanceRequest, ss adminpb.AdminService_ApplyRebalanceServer) error {
	ctx := ss.Context()
	if err := s.authorize(ctx, true); err != nil {
		return err
	}
	if req.GetPlan() == nil {
		return status.Error(codes.InvalidArgument, "serving: apply needs the plan PlanRebalance returned")
	}
	return newProgressSender().run(ss.Send, func(progress func(*adminpb.OperationProgress)) error {
		return s.a.ApplyRebalance(ctx, req.GetPlan(), progress)
	})
}

// Drain implements AdminService.
func (s *admin) Drain(req *adminpb.DrainRequest, ss adminpb.AdminService_DrainServer) error {
	ctx := ss.Context()
	if err := s.authorize(ctx, true); err != nil {
		return err
	}
	if req.GetWorkerId() == "" {
		return status.Error(codes.InvalidArgument, "serving: drain needs a worker id")
	}
	return newProgressSender().run(ss.Send, func(progress func(*adminpb.OperationProgress)) error {
		return s.a.Drain(ctx, req.GetWorkerId(), progress)
	})
}

// Uncordon implements AdminService.
func (s *admin) Uncordon(ctx context.Context, req *adminpb.UncordonRequest) (*adminpb.UncordonResponse, error) {
	if err := s.authorize(ctx, true); err != nil {
		return nil, err
	}
	if req.GetWorkerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "serving: uncordon needs a worker id")
	}
	was, err := s.a.Uncordon(ctx, req.GetWorkerId())
	if err != nil {
		return nil, adminStatus(err)
	}
	return &adminpb.UncordonResponse{WasCordoned: was}, nil
}
