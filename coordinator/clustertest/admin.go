package clustertest

import (
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// Admin connects to a coordinator's admin API; the connection is closed
// with the test. Calls need AdminCtx for the token.
func Admin(t testing.TB, m Member) adminpb.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminpb.NewAdminServiceClient(conn)
}

// AdminCtx is ctx carrying the cluster's admin token.
func AdminCtx(ctx context.Context, c Cluster) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.Config().AdminToken)
}

// Follow reads an operation's progress stream to its end and returns the
// messages and the stream's error (nil when it ended with DONE).
func Follow(s grpc.ServerStreamingClient[adminpb.OperationProgress]) ([]*adminpb.OperationProgress, error) {
	var out []*adminpb.OperationProgress
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}
