package serving

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/coordinator/store"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// fakeAdmin answers with canned values and err.
type fakeAdmin struct {
	err     error
	applied int
}

func (f *fakeAdmin) Status(context.Context) (*adminpb.GetStatusResponse, error) {
	return &adminpb.GetStatusResponse{Leader: "c0", Epoch: 3}, f.err
}
func (f *fakeAdmin) Placement(context.Context, *uint32) (*adminpb.GetPlacementResponse, error) {
	return &adminpb.GetPlacementResponse{Epoch: 3}, f.err
}
func (f *fakeAdmin) ExpertStats(context.Context) (*adminpb.GetExpertStatsResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &adminpb.GetExpertStatsResponse{Epoch: 3, WindowTokens: 10, Imbalance: 1.25, WorkerIds: []string{"w0", "w1"}, WorkerLoad: []float64{50, 30},
		Layers: []*adminpb.LayerStats{{Layer: 0, Imbalance: 1.25}}}, nil
}
func (f *fakeAdmin) PlanRebalance(context.Context, int) (*adminpb.RebalancePlan, error) {
	return &adminpb.RebalancePlan{FromEpoch: 3}, f.err
}
func (f *fakeAdmin) ApplyRebalance(_ context.Context, _ *adminpb.RebalancePlan, progress func(*adminpb.OperationProgress)) error {
	f.applied++
	if f.err != nil {
		return f.err
	}
	progress(&adminpb.OperationProgress{Phase: adminpb.Phase_PHASE_PREPARING})
	progress(&adminpb.OperationProgress{Phase: adminpb.Phase_PHASE_DONE})
	return nil
}
func (f *fakeAdmin) Drain(_ context.Context, _ string, progress func(*adminpb.OperationProgress)) error {
	if f.err == nil {
		progress(&adminpb.OperationProgress{Phase: adminpb.Phase_PHASE_DONE})
	}
	return f.err
}
func (f *fakeAdmin) Uncordon(context.Context, string) (bool, error) { return true, f.err }

// adminServer serves fa with an admin token and API keys as given.
func adminServer(t *testing.T, fa *fakeAdmin, token string, keys ...string) (adminpb.AdminServiceClient, string) {
	t.Helper()
	cfg := testConfig()
	cfg.APIKeys = keys
	if token != "" {
		cfg.AdminTokenFile = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(cfg.AdminTokenFile, []byte("# the operator's\n"+token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(cfg, Deps{Submitter: &fakeSub{}, Model: fakeModel{modelDir(t, ""), 64}, Health: readyHealth{}, Admin: fa})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l)
	conn, err := grpc.NewClient(l.GRPC.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Close(time.Second) })
	return adminpb.NewAdminServiceClient(conn), "http://" + l.HTTP.Addr().String()
}

func bearer(tok string) context.Context {
	if tok == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func applyCode(c adminpb.AdminServiceClient, ctx context.Context) codes.Code {
	s, err := c.ApplyRebalance(ctx, &adminpb.ApplyRebalanceRequest{Plan: &adminpb.RebalancePlan{}})
	for err == nil {
		_, err = s.Recv()
	}
	if errors.Is(err, io.EOF) {
		return codes.OK
	}
	return status.Code(err)
}

func TestAdminAuthorization(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		keys        []string
		send        string
		read, write codes.Code
	}{
		{"open without token or keys", "", nil, "", codes.OK, codes.PermissionDenied},
		{"admin token", "adm", nil, "adm", codes.OK, codes.OK},
		{"admin token missing", "adm", nil, "", codes.Unauthenticated, codes.Unauthenticated},
		{"admin token wrong", "adm", nil, "nope", codes.Unauthenticated, codes.Unauthenticated},
		{"api key reads", "adm", []string{"sk-1"}, "sk-1", codes.OK, codes.PermissionDenied},
		{"api key without admin token", "", []string{"sk-1"}, "sk-1", codes.OK, codes.PermissionDenied},
		{"keys but nothing sent", "", []string{"sk-1"}, "", codes.Unauthenticated, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa := &fakeAdmin{}
			c, _ := adminServer(t, fa, tc.token, tc.keys...)
			_, err := c.GetStatus(bearer(tc.send), &adminpb.GetStatusRequest{})
			if status.Code(err) != tc.read {
				t.Errorf("GetStatus: %v, want %v", err, tc.read)
			}
			if got := applyCode(c, bearer(tc.send)); got != tc.write {
				t.Errorf("ApplyRebalance: %v, want %v", got, tc.write)
			}
			if tc.write != codes.OK && fa.applied != 0 {
				t.Errorf("a refused apply reached the control plane")
			}
		})
	}
}

func TestAdminErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", control.ErrNotLeader), codes.Unavailable},
		{fmt.Errorf("x: %w", store.ErrUnavailable), codes.Unavailable},
		{control.ErrNotReady, codes.NotFound},
		{fmt.Errorf("drain: %w", control.ErrUnknownWorker), codes.NotFound},
		{fmt.Errorf("%w: w1 died", control.ErrAborted), codes.Aborted},
		{control.ErrBusy, codes.FailedPrecondition},
		{control.ErrStalePlan, codes.FailedPrecondition},
		{control.ErrNoStats, codes.FailedPrecondition},
		{fmt.Errorf("drain: %w", planner.ErrNoFit), codes.FailedPrecondition},
		{control.ErrBadPlan, codes.InvalidArgument},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("something else"), codes.Internal},
	} {
		c, _ := adminServer(t, &fakeAdmin{err: tc.err}, "adm")
		if got := applyCode(c, bearer("adm")); got != tc.want {
			t.Errorf("%v: apply answered %v, want %v", tc.err, got, tc.want)
		}
		if _, err := c.GetPlacement(bearer("adm"), &adminpb.GetPlacementRequest{}); status.Code(err) != tc.want {
			t.Errorf("%v: placement answered %v, want %v", tc.err, err, tc.want)
		}
	}
}

func TestExpertMetrics(t *testing.T) {
	_, url := adminServer(t, &fakeAdmin{}, "adm")
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`moemesh:expert_imbalance{model_name="qwen3-test"} 1.25`,
		`moemesh:expert_layer_imbalance{layer="0",model_name="qwen3-test"} 1.25`,
		`moemesh:expert_worker_load{model_name="qwen3-test",worker="w0"} 50`,
		`moemesh:expert_stats_window_tokens{model_name="qwen3-test"} 10`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(string(b), "expert"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
