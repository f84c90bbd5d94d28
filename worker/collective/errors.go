package collective

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
)

// Sentinel errors. Every error an operation returns wraps exactly one of
// ErrPeerLost, ErrTimeout, ErrProtocol, ErrClosed and ErrInvalid (or
// context.Canceled when the caller cancelled), and possibly one of the
// causes ErrQueueFull and ErrStalled; test with errors.Is.
var (
	// ErrPeerLost: the stream to a member of the operation's group broke
	// (the peer closed its mesh, died, or was never connected).
	ErrPeerLost = errors.New("collective: peer lost")
	// ErrTimeout: the context deadline (or MeshConfig.Timeout) passed before
	// every expected message arrived. The error also wraps
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("collective: timeout")
	// ErrProtocol: a peer sent a frame that breaks the exchange protocol: the
	// wrong step, layer, phase or round, the wrong size, a malformed tensor,
	// or a frame from an unexpected sender.
	ErrProtocol = errors.New("collective: protocol violation")
	// ErrQueueFull: a peer sent more than this worker holds for it (its
	// messages ahead exceed MaxPendingMessages or MaxQueuedBytes). Always
	// wrapped together with ErrProtocol.
	ErrQueueFull = errors.New("collective: peer exceeded its queue limit")
	// ErrStalled: a peer stopped mid-message or stopped reading for
	// StallTimeout. Always wrapped together with ErrPeerLost.
	ErrStalled = errors.New("collective: peer stalled")
	// ErrClosed: the mesh was closed.
	ErrClosed = errors.New("collective: mesh closed")
	// ErrInvalid: the caller passed arguments the operation cannot accept
	// (a group without this worker, mismatched lengths, a bad config).
	ErrInvalid = errors.New("collective: invalid argument")
)

// Code maps an error from this package to the gRPC code a server should
// answer with. A lost or misbehaving peer voids the step (ABORTED): the
// coordinator re-plans and resubmits.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrPeerLost), errors.Is(err, ErrProtocol):
		return codes.Aborted
	case errors.Is(err, ErrClosed):
		return codes.Unavailable
	case errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	default:
		return codes.Internal
	}
}

// ctxError converts a finished context into this package's error.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func protocolf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}
