package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/client"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// keyCheck is a server interceptor requiring "authorization: Bearer key".
func keyCheck(key string) []grpc.ServerOption {
	ok := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+key {
			return status.Error(codes.Unauthenticated, "fake: missing or wrong API key")
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := ok(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := ok(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

func TestAPIKey(t *testing.T) {
	f := &fakeServer{}
	addr, _ := start(t, f, keyCheck("s3cret")...)
	ctx := ctxT(t)

	c := dial(t, []string{addr}, client.WithAPIKey("s3cret"))
	st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "x", MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Collect(); err != nil {
		t.Fatalf("with the key over explicit plaintext: %v", err)
	}
	if _, err := c.ListModels(ctx); err != nil {
		t.Fatalf("unary with the key: %v", err)
	}
	for _, md := range f.MD() {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
			t.Errorf("authorization metadata %q, want [\"Bearer s3cret\"]", got)
		}
	}

	for name, opts := range map[string][]client.Option{"no key": nil, "wrong key": {client.WithAPIKey("nope")}} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, []string{addr}, opts...)
			st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Collect(); status.Code(err) != codes.Unauthenticated {
				t.Errorf("Generate err %v, want UNAUTHENTICATED", err)
			}
			if _, err := c.ListModels(ctx); status.Code(err) != codes.Unauthenticated {
				t.Errorf("ListModels err %v, want UNAUTHENTICATED", err)
			}
		})
	}
}

// testPKI writes a CA and a server certificate for 127.0.0.1 signed by it.
func testPKI(t *testing.T) (caFile string, server tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moemesh test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "coordinator"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLS(t *testing.T) {
	caFile, cert := testPKI(t)
	f := &fakeServer{}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	addr, _ := start(t, f, append(keyCheck("k"), grpc.Creds(creds))...)
	ctx := ctxT(t)

	t.Run("CA file", func(t *testing.T) {
		c, err := client.Dial([]string{addr}, client.WithCAFile(caFile), client.WithAPIKey("k"), client.WithRetryPolicy(fastRetry))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "x", MaxTokens: 3})
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Collect()
		if err != nil {
			t.Fatal(err)
		}
		if len(res.TokenIDs) != 3 {
			t.Errorf("%d tokens, want 3", len(res.TokenIDs))
		}
	})
	t.Run("tls.Config", func(t *testing.T) {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		c, err := client.Dial([]string{addr}, client.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), client.WithAPIKey("k"), client.WithRetryPolicy(fastRetry))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ListModels(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		// The system roots do not know the test CA: the handshake fails,
		// is retried as a connection failure, and the retries end.
		p := fastRetry
		p.MaxRetryTime = 100 * time.Millisecond
		before := f.Calls()
		c, err := client.Dial([]string{addr}, client.WithAPIKey("k"), client.WithRetryPolicy(p))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ListModels(ctx); status.Code(err) != codes.Unavailable {
			t.Errorf("err %v, want UNAVAILABLE", err)
		}
		if f.Calls() != before {
			t.Errorf("the server served %d calls to an untrusting client", f.Calls()-before)
		}
	})
	t.Run("plaintext to a TLS server", func(t *testing.T) {
		p := fastRetry
		p.MaxRetryTime = 100 * time.Millisecond
		c := dial(t, []string{addr}, client.WithRetryPolicy(p))
		if _, err := c.ListModels(ctx); status.Code(err) != codes.Unavailable {
			t.Errorf("err %v, want UNAVAILABLE", err)
		}
	})
}
