// Package collective moves activations between workers: the peer-to-peer
// collectives of the distributed forward pass (all-reduce inside a TP
// group, all-gather of the hidden state, all-to-all for MoE dispatch and
// combine), over long-lived gRPC streams and independent of the model.
//
// A Mesh is one worker's end of a mesh generation (epoch): for every pair
// of workers one PeerService.Exchange stream, opened by the lower id and
// used both ways until either side closes. A receive loop per stream
// reassembles frames into messages and queues them per peer; a sender per
// stream writes whole messages one at a time. Operations are tagged with a
// Tag (step, layer, phase) and every member of a group calls them with the
// same tag and group; operations sharing a peer run in the same order on
// both sides (the SPMD lockstep of the forward pass), which is what lets a
// receiver tell a stray frame from an early one.
//
// Operations never hang: they fail with ErrPeerLost when a member's stream
// breaks, ErrTimeout when the context deadline (or MeshConfig.Timeout)
// passes, ErrProtocol when a peer sends a frame of the wrong step, layer,
// phase or size or from the wrong sender, and ErrClosed after Close. A
// peer is bounded in what it can make this worker hold (MaxQueuedBytes,
// reserved before allocating; MaxPendingMessages: ErrQueueFull) and in how
// long it may stall mid-message or stop reading (StallTimeout:
// ErrStalled); see docs/security.md. A
// failed operation drops the messages it never consumed, so later steps
// run on the same mesh; a lost peer stays lost for the generation (the
// coordinator re-plans and a new epoch builds a new Mesh).
//
// The wire format and protocol are specified in docs/wire.md.
//
// Imports: proto/moemesh/v1 and gRPC only; nothing from model/ or worker/.
package collective
