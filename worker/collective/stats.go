package collective

import (
	"slices"
	"sync"
	"time"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// PhaseStats counts one phase's traffic on one worker. Local (self)
// deliveries are not counted: they never touch the network.
type PhaseStats struct {
	// Ops is the number of operations run.
	Ops uint64
	// MessagesSent/Recv count logical messages (empty ones included).
	MessagesSent, MessagesRecv uint64
	// FramesSent/Recv count stream frames (a message may be chunked).
	FramesSent, FramesRecv uint64
	// TensorBytesSent/Recv count tensor data bytes as they travel (2 bytes
	// an element on a bf16 wire): the theoretical payload.
	TensorBytesSent, TensorBytesRecv uint64
	// WireBytesSent/Recv count encoded frames plus gRPC's 5-byte message
	// prefix: what a grpc stats.Handler reports as WireLength without
	// compression. HTTP/2 framing (9 bytes a DATA frame) is not included.
	WireBytesSent, WireBytesRecv uint64
	// Time is the wall time spent inside operations of the phase.
	Time time.Duration
}

func (p *PhaseStats) add(q PhaseStats) {
	p.Ops += q.Ops
	p.MessagesSent += q.MessagesSent
	p.MessagesRecv += q.MessagesRecv
	p.FramesSent += q.FramesSent
	p.FramesRecv += q.FramesRecv
	p.TensorBytesSent += q.TensorBytesSent
	p.TensorBytesRecv += q.TensorBytesRecv
	p.WireBytesSent += q.WireBytesSent
	p.WireBytesRecv += q.WireBytesRecv
	p.Time += q.Time
}

// Stats is a snapshot of a mesh's counters since creation or the last
// ResetStats.
type Stats struct {
	Phases map[Phase]PhaseStats
}

// Total sums every phase.
func (s Stats) Total() PhaseStats {
	var t PhaseStats
	for _, p := range s.Phases {
		t.add(p)
	}
	return t
}

// Proto converts the snapshot to StepStats phases, ordered by phase.
func (s Stats) Proto() []*moemeshv1.PhaseStats {
	phases := make([]Phase, 0, len(s.Phases))
	for ph := range s.Phases {
		phases = append(phases, ph)
	}
	slices.Sort(phases)
	out := make([]*moemeshv1.PhaseStats, 0, len(phases))
	for _, ph := range phases {
		p := s.Phases[ph]
		out = append(out, &moemeshv1.PhaseStats{
			Phase:               ph,
			TensorBytesSent:     p.TensorBytesSent,
			TensorBytesReceived: p.TensorBytesRecv,
			WireBytesSent:       p.WireBytesSent,
			WireBytesReceived:   p.WireBytesRecv,
			MessagesSent:        p.MessagesSent,
			MessagesReceived:    p.MessagesRecv,
			TimeUs:              p.Time.Microseconds(),
		})
	}
	return out
}

// counters is the mesh's live, lock-protected Stats.
type counters struct {
	mu     sync.Mutex
	phases map[Phase]*PhaseStats
}

func (c *counters) get(ph Phase) *PhaseStats {
	if c.phases == nil {
		c.phases = make(map[Phase]*PhaseStats)
	}
	p := c.phases[ph]
	if p == nil {
		p = new(PhaseStats)
		c.phases[ph] = p
	}
	return p
}

func (c *counters) sent(o *outMsg) {
	c.mu.Lock()
	p := c.get(o.phase)
	p.MessagesSent++
	p.FramesSent += uint64(len(o.frames))
	p.TensorBytesSent += uint64(o.tensorBytes)
	p.WireBytesSent += uint64(o.wireBytes)
	c.mu.Unlock()
}

func (c *counters) recvFrame(ph Phase, tensorBytes, wireBytes int) {
	c.mu.Lock()
	p := c.get(ph)
	p.FramesRecv++
	p.TensorBytesRecv += uint64(tensorBytes)
	p.WireBytesRecv += uint64(wireBytes)
	c.mu.Unlock()
}

func (c *counters) recvMessage(ph Phase) {
	c.mu.Lock()
	c.get(ph).MessagesRecv++
	c.mu.Unlock()
}

func (c *counters) op(ph Phase, d time.Duration) {
	c.mu.Lock()
	p := c.get(ph)
	p.Ops++
	p.Time += d
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Phases: make(map[Phase]PhaseStats, len(c.phases))}
	for ph, p := range c.phases {
		s.Phases[ph] = *p
	}
	return s
}

func (c *counters) reset() {
	c.mu.Lock()
	c.phases = nil
	c.mu.Unlock()
}
