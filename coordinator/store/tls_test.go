package store_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	"github.com/moemesh/moemesh/internal/pki"
)

// tlsEtcd starts an etcd of kind serving TLS with client certificate
// authentication, its certificates from a fresh cluster PKI (the
// coordinator's as the server's).
func tlsEtcd(t *testing.T, kind storetest.Kind) (*storetest.Etcd, *pki.LocalPKI) {
	t.Helper()
	lp, err := pki.NewLocal(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	s := lp.Coordinator
	return storetest.StartTLS(t, kind, storetest.TLS{CertFile: s.Cert, KeyFile: s.Key, CAFile: s.CA}), lp
}

func tlsConfig(t *testing.T, endpoints []string, f pki.Files) store.Config {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Endpoints, cfg.Prefix = endpoints, "/test/"
	cfg.DialTimeout, cfg.RequestTimeout = 2*time.Second, 2*time.Second
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	tc, err := store.ClientTLS(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = tc
	return cfg
}

// TestTLS: against an etcd with --client-cert-auth, a store with a
// certificate of the CA connects and reads back what it wrote; plaintext,
// TLS without a client certificate and a certificate of another CA are
// refused.
func TestTLS(t *testing.T) {
	forEachKindTLS(t, func(t *testing.T, kind storetest.Kind) {
		e, lp := tlsEtcd(t, kind)
		if !strings.HasPrefix(e.Endpoints()[0], "https://") {
			t.Fatalf("endpoints %v, want https", e.Endpoints())
		}
		s, err := store.Open(tlsConfig(t, e.Endpoints(), lp.Workers[0]))
		if err != nil {
			t.Fatalf("Open with a client certificate: %v", err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.Client().Put(ctx, "/test/k", "v"); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Client().Get(ctx, "/test/k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
			t.Fatalf("Get = %v, %v", r, err)
		}

		other, err := pki.NewLocal(t.TempDir(), 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			edit func(*store.Config)
		}{
			{"plaintext", func(c *store.Config) {
				c.TLS = nil
				c.Endpoints = []string{"http" + strings.TrimPrefix(e.Endpoints()[0], "https")}
			}},
			{"no client certificate", func(c *store.Config) {
				tc, err := store.ClientTLS(lp.Workers[0].CA, "", "")
				if err != nil {
					t.Fatal(err)
				}
				c.TLS = tc
			}},
			{"certificate of another CA", func(c *store.Config) {
				// Trusts the right server, presents a foreign certificate.
				tc, err := store.ClientTLS(lp.Workers[0].CA, other.Workers[0].Cert, other.Workers[0].Key)
				if err != nil {
					t.Fatal(err)
				}
				c.TLS = tc
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := tlsConfig(t, e.Endpoints(), lp.Workers[0])
				tc.edit(&cfg)
				if s, err := store.Open(cfg); err == nil {
					s.Close()
					t.Fatal("Open succeeded, want a refusal")
				}
			})
		}
	})
}

// TestPassword: with etcd's auth enabled, a store with the user's password
// connects; a wrong password and none are refused.
func TestPassword(t *testing.T) {
	forEachKindTLS(t, func(t *testing.T, kind storetest.Kind) {
		e, lp := tlsEtcd(t, kind)
		admin, err := store.Open(tlsConfig(t, e.Endpoints(), lp.Workers[0]))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cli := admin.Client()
		for _, step := range []func() error{
			func() error { _, err := cli.UserAdd(ctx, "root", "s3cret"); return err },
			func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
			func() error { _, err := cli.AuthEnable(ctx); return err },
		} {
			if err := step(); err != nil {
				admin.Close()
				t.Fatal(err)
			}
		}
		admin.Close()

		cfg := tlsConfig(t, e.Endpoints(), lp.Workers[0])
		cfg.Username, cfg.Password = "root", "s3cret"
		cfg.DialTimeout = 20 * time.Second // etcd checks passwords with bcrypt: slow in-process under -race
		s, err := store.Open(cfg)
		if err != nil {
			t.Fatalf("Open with the password: %v", err)
		}
		if _, err := s.Client().Put(ctx, "/test/k", "v"); err != nil {
			t.Errorf("Put as root: %v", err)
		}
		s.Close()
		for _, pw := range []string{"wrong", ""} {
			cfg := tlsConfig(t, e.Endpoints(), lp.Workers[0])
			if pw != "" {
				cfg.Username, cfg.Password = "root", pw
			}
			if s, err := store.Open(cfg); err == nil {
				s.Close()
				t.Errorf("Open with password %q succeeded, want a refusal", pw)
			}
		}
	})
}

// forEachKindTLS runs f for every etcd kind, in parallel.
func forEachKindTLS(t *testing.T, f func(t *testing.T, kind storetest.Kind)) {
	t.Helper()
	t.Parallel()
	for _, k := range storetest.Kinds(t) {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			f(t, k)
		})
	}
}
