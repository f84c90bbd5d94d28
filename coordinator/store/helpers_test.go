package store_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started once per process by the etcd server and gRPC; not per test.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// forEachKind runs f against a fresh etcd of every kind storetest offers,
// in parallel.
func forEachKind(t *testing.T, f func(t *testing.T, e *storetest.Etcd)) {
	t.Helper()
	t.Parallel()
	for _, k := range storetest.Kinds(t) {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			f(t, storetest.Start(t, k))
		})
	}
}

// open opens a store on e, closed at cleanup.
func open(t *testing.T, e *storetest.Etcd) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Endpoints = e.Endpoints()
	cfg.Prefix = "/test/"
	cfg.RequestTimeout = 2 * time.Second
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closed reports whether ch is closed (or has a value) now.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ctxT is a context that ends with the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
