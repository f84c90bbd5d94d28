package etcdembed_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*etcdembed.Config)
	}{
		{"no dir", func(c *etcdembed.Config) { c.Dir = "" }},
		{"no name", func(c *etcdembed.Config) { c.Name = "" }},
		{"no timeout", func(c *etcdembed.Config) { c.StartTimeout = 0 }},
		{"not loopback", func(c *etcdembed.Config) { c.ClientURL = "http://0.0.0.0:0" }},
		{"https", func(c *etcdembed.Config) { c.PeerURL = "https://127.0.0.1:0" }},
		{"no port", func(c *etcdembed.Config) { c.ClientURL = "http://127.0.0.1" }},
		{"tls on http", func(c *etcdembed.Config) {
			c.TLS = &etcdembed.ServerTLS{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}
		}},
		{"tls without a client CA", func(c *etcdembed.Config) {
			c.ClientURL, c.TLS = "https://127.0.0.1:0", &etcdembed.ServerTLS{CertFile: "c", KeyFile: "k"}
		}},
		{"tls files missing", func(c *etcdembed.Config) {
			c.ClientURL, c.TLS = "https://127.0.0.1:0", &etcdembed.ServerTLS{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k", ClientCAFile: "/nonexistent/ca"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := etcdembed.DefaultConfig(t.TempDir())
			tc.edit(&cfg)
			if e, err := etcdembed.Start(context.Background(), cfg); err == nil {
				e.Close()
				t.Fatal("Start succeeded, want an error")
			}
		})
	}
}

// TestRestart writes a key, stops the server while a client watches, and
// starts it again on the same dir and URLs: the key is still there.
func TestRestart(t *testing.T) {
	cfg := etcdembed.DefaultConfig(t.TempDir())
	cfg.Log = nil
	e, err := etcdembed.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientURL = e.Endpoints()[0]
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	cli.Watch(wctx, "k") // an open stream must not hold up Close

	start := time.Now()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v with a client stream open", d)
	}

	e2, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer e2.Close()
	if got := e2.Endpoints(); got[0] != cfg.ClientURL {
		t.Errorf("restart endpoints %v, want %s", got, cfg.ClientURL)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get after restart = %v, %v", resp, err)
	}
}
