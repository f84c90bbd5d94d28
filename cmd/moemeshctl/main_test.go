package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "t0ken"

// env points the CLI at addrs with the admin token.
func env(addrs ...string) map[string]string {
	return map[string]string{envEndpoints: strings.Join(addrs, ","), envToken: testToken}
}

// golden compares got with testdata/name.golden (or rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"status", []string{"status"}},
		{"placement_show", []string{"placement", "show"}},
		{"placement_show_layer", []string{"placement", "show", "--layer", "1"}},
		{"experts_stats", []string{"experts", "stats"}},
		{"experts_stats_layer_top", []string{"experts", "stats", "--layer", "2", "--top", "3"}},
		{"rebalance_dry_run", []string{"rebalance", "--dry-run"}},
		{"rebalance_apply", []string{"rebalance", "--apply", "--yes"}},
		{"drain", []string{"drain", "w-1", "--yes"}},
		{"uncordon", []string{"uncordon", "w-3"}},
	} {
		for _, f := range formats {
			t.Run(tc.name+"/"+string(f), func(t *testing.T) {
				fake := newCannedFake()
				r := runCLI(t, env(serveFake(t, fake)), "", append(tc.args, "-o", string(f))...)
				if r.code != ExitOK {
					t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, ExitOK, r.errOut)
				}
				got := r.out
				if r.errOut != "" {
					got += "--- stderr ---\n" + r.errOut
				}
				golden(t, tc.name+"."+string(f), got)
				for i, a := range fake.Auth() {
					if a != "Bearer "+testToken {
						t.Errorf("call %d sent authorization %q, want the token", i, a)
					}
				}
			})
		}
	}
}

// decode parses a JSON or YAML document into JSON's generic types.
func decode(t *testing.T, f format, doc string) map[string]any {
	t.Helper()
	var v any
	switch f {
	case formatJSON:
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatalf("json: %v\n%s", err, doc)
		}
	case formatYAML:
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatalf("yaml: %v\n%s", err, doc)
		}
		// Through JSON, so numbers compare as JSON's.
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		v = nil
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("document is %T, want an object:\n%s", v, doc)
	}
	return m
}

// TestShapes checks the documented keys scripts rely on against the
// canned answers, and that JSON and YAML carry the same document.
func TestShapes(t *testing.T) {
	addr := serveFake(t, newCannedFake())
	docs := func(args ...string) map[string]any {
		t.Helper()
		var byFormat []map[string]any
		for _, f := range []format{formatJSON, formatYAML} {
			r := runCLI(t, env(addr), "", append(args, "-o", string(f))...)
			if r.code != ExitOK {
				t.Fatalf("%v -o %s: exit %d: %s", args, f, r.code, r.errOut)
			}
			byFormat = append(byFormat, decode(t, f, r.out))
		}
		if diff := cmp.Diff(byFormat[0], byFormat[1]); diff != "" {
			t.Errorf("%v: json and yaml differ (-json +yaml):\n%s", args, diff)
		}
		return byFormat[0]
	}

	st := docs("status")
	if st["leader"] != "c-0" || st["epoch"] != float64(7) {
		t.Errorf("status: leader %v epoch %v, want c-0 and 7", st["leader"], st["epoch"])
	}
	var ids, states []string
	for _, w := range st["workers"].([]any) {
		w := w.(map[string]any)
		ids = append(ids, w["id"].(string))
		states = append(states, w["state"].(string))
	}
	if diff := cmp.Diff([]string{"w-0", "w-1", "w-2", "w-3", "w-4"}, ids); diff != "" {
		t.Errorf("status workers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"serving", "loading", "spare", "cordoned", "lost"}, states); diff != "" {
		t.Errorf("status states (-want +got):\n%s", diff)
	}

	es := docs("experts", "stats")
	if es["window_tokens"] != float64(1500) || es["imbalance"] != 1.3 {
		t.Errorf("experts stats: window_tokens %v imbalance %v, want 1500 and 1.3", es["window_tokens"], es["imbalance"])
	}
	var tokens [][]uint64
	for i, l := range es["layers"].([]any) {
		l := l.(map[string]any)
		if l["layer"] != float64(i) {
			t.Errorf("layers[%d].layer = %v", i, l["layer"])
		}
		var row []uint64
		for _, n := range l["tokens"].([]any) {
			row = append(row, uint64(n.(float64)))
		}
		tokens = append(tokens, row)
	}
	if diff := cmp.Diff(cannedTokens, tokens); diff != "" {
		t.Errorf("experts stats tokens (-want +got):\n%s", diff)
	}

	rb := docs("rebalance", "--dry-run")
	want := map[string]any{"from_epoch": float64(7), "bytes": float64(3 << 20), "imbalance_before": 1.3, "imbalance_after": 1.05}
	for k, v := range want {
		if rb[k] != v {
			t.Errorf("rebalance %s = %v, want %v", k, rb[k], v)
		}
	}
	moves := rb["moves"].([]any)
	if len(moves) != 4 {
		t.Fatalf("rebalance: %d moves, want 4", len(moves))
	}
	if m := moves[1].(map[string]any); m["from_worker"] != "" || m["to_worker"] != "w-0" || m["expert"] != float64(5) {
		t.Errorf("moves[1] = %v, want a new replica of expert 5 on w-0", m)
	}
}

func TestUnknownOutput(t *testing.T) {
	for _, args := range [][]string{{"status"}, {"experts", "stats"}, {"placement", "show"}, {"rebalance", "--dry-run"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			fake := newCannedFake()
			r := runCLI(t, env(serveFake(t, fake)), "", append(args, "-o", "xml")...)
			if r.code != ExitUsage {
				t.Fatalf("exit %d, want %d", r.code, ExitUsage)
			}
			for _, f := range formats {
				if !strings.Contains(r.errOut, string(f)) {
					t.Errorf("the error does not name %q: %s", f, r.errOut)
				}
			}
			if c := fake.Calls(); len(c) != 0 {
				t.Errorf("calls %v, want none", c)
			}
		})
	}
}

func TestNoToken(t *testing.T) {
	for _, args := range [][]string{
		{"rebalance", "--apply", "--yes"},
		{"rebalance", "--apply"},
		{"drain", "w-1", "--yes"},
		{"uncordon", "w-3"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			fake := newCannedFake()
			e := map[string]string{envEndpoints: serveFake(t, fake)}
			r := runCLI(t, e, "y\n", args...)
			if r.code != ExitUnauthenticated {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, ExitUnauthenticated, r.errOut)
			}
			if c := fake.Calls(); len(c) != 0 {
				t.Errorf("calls %v, want none", c)
			}
		})
	}
}

func TestPrompt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		in    string
		code  int
		calls []string
	}{
		{"apply no", []string{"rebalance", "--apply"}, "n\n", ExitDeclined, []string{"PlanRebalance"}},
		{"apply no answer", []string{"rebalance", "--apply"}, "", ExitDeclined, []string{"PlanRebalance"}},
		{"apply anything else", []string{"rebalance", "--apply"}, "sure\n", ExitDeclined, []string{"PlanRebalance"}},
		{"apply yes", []string{"rebalance", "--apply"}, "y\n", ExitOK, []string{"PlanRebalance", "ApplyRebalance"}},
		{"apply YES", []string{"rebalance", "--apply", "--max-moves", "2"}, "YES\n", ExitOK, []string{"PlanRebalance", "ApplyRebalance"}},
		{"drain no", []string{"drain", "w-1"}, "N\n", ExitDeclined, []string{"GetStatus"}},
		{"drain yes", []string{"drain", "w-1"}, "y\n", ExitOK, []string{"GetStatus", "Drain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newCannedFake()
			r := runCLI(t, env(serveFake(t, fake)), tc.in, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tc.code, r.errOut)
			}
			if diff := cmp.Diff(tc.calls, fake.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if !strings.Contains(r.out, "[y/N]") {
				t.Errorf("no y/N prompt in the output:\n%s", r.out)
			}
		})
	}
}

// TestApply checks the plan applied is the one shown, and every progress
// message is printed.
func TestApply(t *testing.T) {
	fake := newCannedFake()
	r := runCLI(t, env(serveFake(t, fake)), "y\n", "rebalance", "--apply", "--max-moves", "3")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.errOut)
	}
	want := cannedPlan()
	want.MaxMoves, want.Moves = 3, want.Moves[:3]
	if diff := cmp.Diff([]*adminv1.RebalancePlan{want}, fake.applied, protocmp.Transform()); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	var lines []string
	for _, l := range strings.Split(r.out, "\n") {
		if strings.HasPrefix(l, "rebalance: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != len(cannedProgress()) {
		t.Errorf("%d progress lines, want %d:\n%s", len(lines), len(cannedProgress()), r.out)
	}
	for i, p := range cannedProgress() {
		if i < len(lines) && !strings.Contains(lines[i], phaseName(p.GetPhase())) {
			t.Errorf("line %d %q does not name phase %s", i, lines[i], phaseName(p.GetPhase()))
		}
	}
}

func TestFailover(t *testing.T) {
	standby := &fakeAdmin{code: codes.Unavailable}
	leader := newCannedFake()
	r := runCLI(t, env(deadAddr(t), serveFake(t, standby), serveFake(t, leader)), "", "rebalance", "--dry-run", "-o", "json")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.errOut)
	}
	if diff := cmp.Diff([]string{"PlanRebalance"}, standby.Calls()); diff != "" {
		t.Errorf("standby calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PlanRebalance"}, leader.Calls()); diff != "" {
		t.Errorf("leader calls (-want +got):\n%s", diff)
	}

	r = runCLI(t, env(deadAddr(t), serveFake(t, standby)), "", "status")
	if r.code != ExitUnavailable {
		t.Errorf("no endpoint answering: exit %d, want %d", r.code, ExitUnavailable)
	}
}

func TestServerErrors(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want int
	}{
		{codes.Unauthenticated, ExitUnauthenticated},
		{codes.PermissionDenied, ExitPermissionDenied},
		{codes.Unavailable, ExitUnavailable},
		{codes.NotFound, ExitNotFound},
		{codes.FailedPrecondition, ExitPrecondition},
		{codes.Aborted, ExitAborted},
		{codes.DeadlineExceeded, ExitDeadline},
		{codes.InvalidArgument, ExitInvalidArgument},
		{codes.Canceled, ExitCancelled},
		{codes.Internal, ExitFailure},
		{codes.Unimplemented, ExitFailure},
	} {
		for _, args := range [][]string{{"status"}, {"experts", "stats"}, {"rebalance", "--apply", "--yes"}, {"uncordon", "w-3"}} {
			t.Run(tc.code.String()+"/"+strings.Join(args, " "), func(t *testing.T) {
				fake := &fakeAdmin{code: tc.code}
				r := runCLI(t, env(serveFake(t, fake)), "", args...)
				if r.code != tc.want {
					t.Errorf("exit %d, want %d; stderr: %s", r.code, tc.want, r.errOut)
				}
			})
		}
	}
}

func TestOperationEnds(t *testing.T) {
	done := cannedProgress()
	for _, tc := range []struct {
		name     string
		progress []*adminv1.OperationProgress
		endErr   error
		want     int
	}{
		{"aborted phase", append(slices.Clone(done[:2]), &adminv1.OperationProgress{Phase: adminv1.Phase_PHASE_ABORTED,
			FromEpoch: 7, ToEpoch: 8, Message: "w-1 died"}), nil, ExitAborted},
		{"cut before done", done[:3], nil, ExitInterrupted},
	} {
		for _, args := range [][]string{{"rebalance", "--apply", "--yes"}, {"drain", "w-1", "--yes"}} {
			t.Run(tc.name+"/"+args[0], func(t *testing.T) {
				fake := newCannedFake()
				fake.progress, fake.endErr = tc.progress, tc.endErr
				r := runCLI(t, env(serveFake(t, fake)), "", args...)
				if r.code != tc.want {
					t.Errorf("exit %d, want %d; stderr: %s", r.code, tc.want, r.errOut)
				}
			})
		}
	}
}

func TestDeadline(t *testing.T) {
	fake := &fakeAdmin{block: true}
	r := runCLI(t, env(serveFake(t, fake)), "", "status", "--timeout", "50ms")
	if r.code != ExitDeadline {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, ExitDeadline, r.errOut)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"rebalance"},
		{"rebalance", "--dry-run=none"},
		{"rebalance", "--dry-run=client"},
		{"rebalance", "--dry-run", "--apply"},
		{"rebalance", "--dry-run", "--yes"},
		{"drain"},
		{"drain", "a", "b"},
		{"uncordon"},
		{"status", "extra"},
		{"status", "--timeout", "0s"},
		{"status", "--token", "x", "--token-file", "f"},
		{"experts", "stats", "--top", "-1"},
		{"experts", "stats", "--layer", "9"},
		{"status", "--cacert", "/nonexistent/ca.pem"},
		{"nonsense"},
		{"placement", "nonsense"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			fake := newCannedFake()
			r := runCLI(t, env(serveFake(t, fake)), "y\n", args...)
			if r.code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, ExitUsage, r.errOut)
			}
			// Only the --layer check needs the statistics.
			if c := fake.Calls(); len(c) != 0 && !slices.Equal(c, []string{"GetExpertStats"}) {
				t.Errorf("calls %v", c)
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"env", "from-env", nil, "Bearer from-env"},
		{"flag wins", "from-env", []string{"--token", "from-flag"}, "Bearer from-flag"},
		{"file", "from-env", []string{"--token-file", file}, "Bearer from-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newCannedFake()
			e := map[string]string{envEndpoints: serveFake(t, fake), envToken: tc.env}
			r := runCLI(t, e, "", append([]string{"uncordon", "w-3"}, tc.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit %d: %s", r.code, r.errOut)
			}
			if diff := cmp.Diff([]string{tc.want}, fake.Auth()); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEndpointsFlag: --endpoints wins over $MOEMESH_ENDPOINTS.
func TestEndpointsFlag(t *testing.T) {
	fake := newCannedFake()
	r := runCLI(t, map[string]string{envEndpoints: deadAddr(t)}, "", "status", "--endpoints", serveFake(t, fake))
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.errOut)
	}
}

// cancelReader cancels the command's context when the prompt reads, then
// blocks until the test ends, as a terminal would while Ctrl-C arrives.
type cancelReader struct {
	cancel  context.CancelFunc
	release chan struct{}
}

func (r cancelReader) Read([]byte) (int, error) {
	r.cancel()
	<-r.release
	return 0, io.EOF
}

func TestPromptInterrupted(t *testing.T) {
	fake := newCannedFake()
	e := env(serveFake(t, fake))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var out, errOut bytes.Buffer
	s := IOStreams{In: cancelReader{cancel: cancel, release: release}, Out: &out, ErrOut: &errOut}
	code := run(ctx, []string{"rebalance", "--apply"}, s, func(k string) string { return e[k] })
	if code != ExitCancelled {
		t.Errorf("exit %d, want %d; stderr: %s", code, ExitCancelled, errOut.String())
	}
	if diff := cmp.Diff([]string{"PlanRebalance"}, fake.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
