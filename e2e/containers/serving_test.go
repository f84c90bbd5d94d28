//go:build containers

package containers_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/client"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// TestServing: the containerized cluster lays out three workers and keeps
// the fourth as a spare, answers only with the API key, and its greedy
// chat equals the single-process run.
func TestServing(t *testing.T) {
	c := startCluster(t)
	_, layout := c.layout(t)
	if len(layout) != workers {
		t.Errorf("layout %v: want %d workers", layout, workers)
	}
	ids, _ := c.chat(t, nil)
	c.checkOutput(t, "greedy chat", ids)
	t.Logf("greedy chat: %d tokens", len(ids))
	again, _ := c.chat(t, nil)
	if diff := cmp.Diff(ids, again); diff != "" {
		t.Errorf("a second greedy chat (-first +second):\n%s", diff)
	}

	var addrs []string
	for _, m := range c.coords {
		addrs = append(addrs, net.JoinHostPort(m.ip, fmt.Sprint(grpcPort)))
	}
	for name, opts := range map[string][]client.Option{
		"no key":    {client.WithInsecure()},
		"wrong key": {client.WithInsecure(), client.WithAPIKey("not-" + apiKey)},
	} {
		sdk, err := client.Dial(addrs, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = sdk.Tokenize(ctx, &pb.TokenizeRequest{Prompt: "hi"})
		cancel()
		sdk.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: Tokenize gave %v, want UNAUTHENTICATED", name, err)
		}
	}

	// The HTTP API takes the same key.
	models := "http://" + net.JoinHostPort(c.leader(t, time.Minute).ip, fmt.Sprint(httpPort)) + "/v1/models"
	for _, tc := range []struct {
		key  string
		want int
	}{{"", http.StatusUnauthorized}, {"not-" + apiKey, http.StatusUnauthorized}, {apiKey, http.StatusOK}} {
		req, err := http.NewRequest(http.MethodGet, models, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		hc := &http.Client{Timeout: 30 * time.Second}
		r, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != tc.want {
			t.Errorf("GET /v1/models with key %q: HTTP %d, want %d", tc.key, r.StatusCode, tc.want)
		}
	}
}
