package collective

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Phase is the proto enum naming a point of the forward pass.
type Phase = moemeshv1.Phase

// DType is the proto enum naming a wire element type.
type DType = moemeshv1.DType

// Wire dtypes.
const (
	F32  = moemeshv1.DType_DTYPE_F32
	BF16 = moemeshv1.DType_DTYPE_BF16
)

// Tag identifies one collective operation. Every member of the group must
// call the operation with the same Tag; frames carry it and receivers check
// it.
type Tag struct {
	Step  uint64
	Layer uint32
	Phase Phase
}

func (t Tag) String() string {
	return fmt.Sprintf("step %d layer %d %s", t.Step, t.Layer, t.Phase)
}

// ProtocolVersion is the exchange protocol revision sent in Hello.
const ProtocolVersion = 1

// Limits on MeshConfig.MaxChunkBytes: small enough that a frame (data,
// aux, headers) stays under gRPC's default 4 MiB receive limit.
const (
	minChunkBytes = 64
	maxChunkBytes = 2 << 20
)

// MeshConfig configures one worker's end of a mesh.
type MeshConfig struct {
	// Self is this worker's id: an index into Addrs.
	Self int
	// Addrs holds every worker's PeerService address, indexed by worker id.
	// "" marks a worker that is absent: no link is made to it and any
	// operation naming it fails with ErrPeerLost.
	Addrs []string
	// Epoch is the mesh generation. Peers only connect within one
	// generation; a new one is built whenever Addrs change.
	Epoch uint64

	// Listener, when set, makes the mesh run its own gRPC server on it
	// (with ServerOptions) and stop it on Close.
	Listener      net.Listener
	ServerOptions []grpc.ServerOption
	// Service, used when Listener is nil, is a PeerService already
	// registered on the worker's own gRPC server. Several meshes (of
	// different epochs) may share one Service.
	Service *Service

	// DialOptions are used to reach the peers; nil means plaintext.
	DialOptions []grpc.DialOption
	// Timeout bounds every operation on top of its context; 0 means the
	// context alone.
	Timeout time.Duration
	// WireDType is the dtype activations travel in (F32 or BF16).
	WireDType DType
	// MaxChunkBytes caps the tensor bytes in one frame; larger messages are
	// split. A multiple of 4 in [64, 2 MiB].
	MaxChunkBytes int
	// OneRoundAllReduceBytes: an all-reduce of at most this many bytes
	// (len × 4) runs in one round, every member sending its whole vector to
	// every other and summing all of them in rank order, instead of a
	// reduce-scatter and an all-gather: one network latency instead of two,
	// for (T−1)·n elements sent instead of 2(T−1)/T·n. With an f32 wire the
	// result is bitwise the two-round one. Every member must use the same
	// value. 0 always uses two rounds.
	OneRoundAllReduceBytes int
	// MaxPendingMessages caps the messages a peer may have sent ahead of
	// this worker on one link; past it the link is failed with ErrProtocol.
	MaxPendingMessages int
	// MaxQueuedBytes caps the memory one peer can make this worker hold on
	// its link: the tensor and aux bytes of the messages it sent ahead plus
	// the message being reassembled (whose size is reserved from the shape
	// its first chunk announces, before anything is allocated). Past it the
	// link is failed with ErrProtocol and ErrQueueFull. It also caps the
	// size of one message.
	MaxQueuedBytes int64
	// StallTimeout fails a link whose peer stops mid-message (no next chunk
	// within it) or stops reading (one frame's Send blocked for it), with
	// ErrPeerLost and ErrStalled, freeing what the link holds; 0 disables
	// it. The receive loop of a healthy peer always drains its stream, and
	// a message's chunks are written back to back, so either stall means
	// the peer is broken or hostile.
	StallTimeout time.Duration
	// Logger receives link events; nil means slog.Default().
	Logger *slog.Logger

	// OnPeerLost, when set, is told that the link to peer failed: its
	// stream broke or the peer broke the protocol (err wraps ErrPeerLost or
	// ErrProtocol). Closing the mesh reports nothing, nor do absent
	// workers. Contract: it is called at most once per peer per mesh,
	// synchronously from the goroutine that detected the failure (the
	// link's receive loop or sender, its dialer, an operation that found
	// a protocol violation, or the StallTimeout timer), after the link is marked failed so LostPeers
	// already lists the peer. It must not block and must not call back into
	// the mesh (Close would wait for the calling goroutine); hand the event
	// to another goroutine to act on it.
	OnPeerLost func(peer int, err error)
}

// DefaultMeshConfig returns a complete config; callers fill in Self, Addrs,
// Epoch and Listener or Service.
func DefaultMeshConfig() MeshConfig {
	return MeshConfig{
		// A step's collectives wait on the slowest worker's compute; 30s
		// covers a long prefill while still failing a hung peer.
		Timeout: 30 * time.Second,
		// f32 keeps the distributed forward pass bitwise comparable with
		// the single-process one; bf16 halves the traffic when chosen.
		WireDType: F32,
		// 1 MiB keeps frames far below gRPC's 4 MiB default limit while
		// amortising per-frame overhead.
		MaxChunkBytes: 1 << 20,
		// At decode sizes (a few tokens' hidden state, up to 64 KiB) the
		// latency saved outweighs the extra bytes on loopback and on a
		// cluster network alike; prefill-sized vectors keep two rounds.
		OneRoundAllReduceBytes: 64 << 10,
		// Lockstep peers are at most a few operations ahead; 1024 leaves
		// room for every phase of several layers before a runaway peer is
		// cut off.
		MaxPendingMessages: 1024,
		// The largest legitimate message is a prefill all-gather of the
		// hidden state, tokens × hidden × 4 bytes: 16k tokens of a
		// 4096-wide model is 256 MiB. 512 MiB admits two such messages
		// ahead per link; raise it for larger prefill batches or wider
		// models. The bound is per peer, so a worker holds at most
		// (workers-1) × this for its peers.
		MaxQueuedBytes: 512 << 20,
		// Chunks of a message follow each other at network speed; 10s
		// without the next one, or without the peer reading, is a broken
		// peer, found well inside the default 30s operation timeout.
		StallTimeout: 10 * time.Second,
	}
}

func (c *MeshConfig) validate() error {
	n := len(c.Addrs)
	if n == 0 {
		return invalidf("Addrs is empty: list every worker's address, indexed by worker id")
	}
	if c.Self < 0 || c.Self >= n {
		return invalidf("Self = %d is outside [0, %d): it indexes Addrs", c.Self, n)
	}
	if (c.Listener == nil) == (c.Service == nil) {
		return invalidf("set exactly one of Listener (own server) and Service (shared server)")
	}
	if c.WireDType != F32 && c.WireDType != BF16 {
		return invalidf("WireDType = %v: use F32 or BF16", c.WireDType)
	}
	if c.MaxChunkBytes < minChunkBytes || c.MaxChunkBytes > maxChunkBytes || c.MaxChunkBytes%4 != 0 {
		return invalidf("MaxChunkBytes = %d: use a multiple of 4 in [%d, %d]", c.MaxChunkBytes, minChunkBytes, maxChunkBytes)
	}
	if c.MaxPendingMessages < 1 {
		return invalidf("MaxPendingMessages = %d: must be at least 1", c.MaxPendingMessages)
	}
	if c.MaxQueuedBytes < int64(c.MaxChunkBytes) {
		return invalidf("MaxQueuedBytes = %d: must be at least MaxChunkBytes (%d) so a frame fits", c.MaxQueuedBytes, c.MaxChunkBytes)
	}
	if c.StallTimeout < 0 {
		return invalidf("StallTimeout = %v: must be >= 0 (0 disables it)", c.StallTimeout)
	}
	if c.Timeout < 0 {
		return invalidf("Timeout = %v: must be >= 0 (0 means the context alone)", c.Timeout)
	}
	return nil
}
