package serving

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/scheduler"
)

func TestAPIKeys(t *testing.T) {
	tok := qwen3(t)
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("# ops\nsk-file  \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_MOEMESH_KEYS", "sk-env1,sk-env2")
	cfg := testConfig()
	cfg.APIKeys, cfg.APIKeyFile, cfg.APIKeyEnv = []string{"sk-list"}, file, "TEST_MOEMESH_KEYS"
	ts := startServer(t, cfg, &fakeSub{reply: textReply(tok, "ok")}, 4096)
	body := `{"prompt": "Hi", "max_tokens": 2}`
	for _, tc := range []struct {
		header string
		want   int
	}{
		{"", 401}, {"Bearer sk-nope", 401}, {"sk-list", 401}, {"Basic c2s=", 401},
		{"Bearer sk-list", 200}, {"Bearer sk-file", 200}, {"Bearer sk-env1", 200}, {"Bearer sk-env2", 200},
	} {
		resp := post(t, ts, "/v1/completions", body, "Authorization", tc.header)
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.header, resp.StatusCode, tc.want)
		}
		if tc.want == 401 {
			var e oaError
			decodeBody(t, resp, &e)
			if e.Error.Type != "authentication_error" || strings.Contains(e.Error.Message, "sk-") {
				t.Errorf("401 body %+v", e)
			}
		}
	}
	for _, path := range []string{"/health", "/metrics"} {
		r, err := http.Get(ts.http + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("%s without a key: %d", path, r.StatusCode)
		}
	}
	ctx := rpcCtx(t)
	if _, err := ts.client.ListModels(ctx, &infpb.ListModelsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC without a key: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer sk-nope")
	if _, err := collectGenerateCtx(bad, ts, &infpb.GenerateRequest{Prompt: "Hi"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC stream with a wrong key: %v", err)
	}
	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer sk-env2")
	if _, err := ts.client.ListModels(good, &infpb.ListModelsRequest{}); err != nil {
		t.Errorf("gRPC with a key: %v", err)
	}
}

func collectGenerateCtx(ctx context.Context, ts *testServer, req *infpb.GenerateRequest) (string, error) {
	st, err := ts.client.Generate(ctx, req)
	if err != nil {
		return "", err
	}
	var text string
	for {
		resp, err := st.Recv()
		if err == io.EOF {
			return text, nil
		}
		if err != nil {
			return text, err
		}
		text += resp.Text
	}
}

func TestStreamsPerKey(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "a"), hold: true}
	cfg := testConfig()
	cfg.APIKeys, cfg.MaxStreamsPerKey = []string{"k1", "k2"}, 1
	ts := startServer(t, cfg, sub, 4096)
	ctx, cancel := context.WithCancel(rpcCtx(t))
	defer cancel()
	k1 := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer k1")
	st, err := ts.client.Generate(k1, &infpb.GenerateRequest{Prompt: "Hi", IgnoreEos: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	// k1's second stream is refused on both APIs; k2 is served.
	if _, err := collectGenerateCtx(k1, ts, &infpb.GenerateRequest{Prompt: "Hi"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second gRPC stream of k1: %v", err)
	}
	if r := post(t, ts, "/v1/completions", `{"prompt": "Hi"}`, "Authorization", "Bearer k1"); r.StatusCode != 429 {
		t.Errorf("second HTTP stream of k1: %d", r.StatusCode)
	}
	// max_tokens 1 ends before the fake holds.
	if r := post(t, ts, "/v1/completions", `{"prompt": "Hi", "max_tokens": 1}`, "Authorization", "Bearer k2"); r.StatusCode != 200 {
		t.Errorf("k2: %d", r.StatusCode)
	}
	cancel()
	eventually(t, "k1's slot back", func() bool {
		r := post(t, ts, "/v1/completions", `{"prompt": "Hi", "max_tokens": 1}`, "Authorization", "Bearer k1")
		return r.StatusCode == 200
	})
}

func TestPromptLimit(t *testing.T) {
	tok := qwen3(t)
	cfg := testConfig()
	cfg.MaxPromptTokens = 4
	ts := startServer(t, cfg, &fakeSub{reply: textReply(tok, "ok")}, 4096)
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{PromptTokenIds: []int32{1, 2, 3, 4, 5}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("gRPC: %v", err)
	}
	if r := post(t, ts, "/v1/completions", `{"prompt": [1, 2, 3, 4, 5]}`); r.StatusCode != 400 {
		t.Errorf("HTTP: %d", r.StatusCode)
	}
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{PromptTokenIds: []int32{1, 2, 3, 4}}); err != nil {
		t.Errorf("at the limit: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	tok := qwen3(t)
	ts := startServer(t, testConfig(), &fakeSub{reply: textReply(tok, "one two")}, 4096)
	m := ts.s.Metrics()
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi"}); err != nil {
		t.Fatal(err)
	}
	m.Step(scheduler.Stats{Running: 3, Waiting: 2, KVUsage: 0.25, PromptTokens: 10, GenerationTokens: 4, Preemptions: 1,
		Duration: time.Millisecond, WorkerTime: []time.Duration{time.Millisecond, 2 * time.Millisecond}, ExpertTokens: [][]uint32{{1, 0, 5}, {2}}})
	m.Scheduled(time.Millisecond)
	if got := value(t, m.running.WithLabelValues("qwen3-test")); got != 3 {
		t.Errorf("running %v", got)
	}
	if got := value(t, m.expertTokens.WithLabelValues("qwen3-test", "0", "2")); got != 5 {
		t.Errorf("expert (0, 2) %v", got)
	}
	if got := value(t, m.success.WithLabelValues("qwen3-test", "stop")); got != 1 {
		t.Errorf("success{stop} %v", got)
	}
	r, err := http.Get(ts.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	for _, name := range []string{"num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prompt_tokens_total",
		"generation_tokens_total", "request_success_total", "num_preemptions_total", "time_to_first_token_seconds",
		"inter_token_latency_seconds", "time_per_output_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds",
		"request_prompt_tokens", "request_generation_tokens", "request_params_max_tokens", "expert_routed_tokens_total",
		"worker_step_duration_seconds", "step_duration_seconds"} {
		if !strings.Contains(string(b), "\nmoemesh:"+name) {
			t.Errorf("/metrics lacks moemesh:%s", name)
		}
	}
	if !strings.Contains(string(b), `model_name="qwen3-test"`) {
		t.Error("/metrics has no model_name label")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moemesh-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	tok := qwen3(t)
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	dir := modelDir(t, "")
	s, err := New(cfg, Deps{Submitter: &fakeSub{reply: textReply(tok, "ok")}, Model: fakeModel{dir, 4096}, Health: readyHealth{}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l)
	t.Cleanup(func() { s.Close(time.Second) })
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	r, err := hc.Get("https://" + l.HTTP.Addr().String() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("HTTPS: %d", r.StatusCode)
	}
	conn, err := grpc.NewClient(l.GRPC.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := infpb.NewInferenceServiceClient(conn).ListModels(rpcCtx(t), &infpb.ListModelsRequest{}); err != nil {
		t.Errorf("gRPC over TLS: %v", err)
	}
	// A half TLS configuration is refused.
	cfg.TLSKeyFile = ""
	if _, err := New(cfg, Deps{Submitter: &fakeSub{}, Model: fakeModel{dir, 1}, Health: readyHealth{}}); err == nil {
		t.Error("New accepted a certificate without a key")
	}
}

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Counter != nil:
		return d.Counter.GetValue()
	}
	t.Fatalf("metric %v is neither a gauge nor a counter", m.Desc())
	return 0
}
