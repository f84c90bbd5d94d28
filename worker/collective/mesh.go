package collective

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Mesh is one worker's end of the peer-to-peer links of a mesh
// generation: one long-lived Exchange stream per peer pair, a receive loop
// and a sender per stream. Its operations are safe for concurrent use, but
// operations that share a peer must be issued in the same order on every
// worker (see docs/wire.md).
type Mesh struct {
	cfg    MeshConfig
	self   int
	logger *slog.Logger
	links  []*link // indexed by worker id; nil for self and absent workers
	svc    *Service
	srv    *grpc.Server       // own server, when cfg.Listener is set
	conns  []*grpc.ClientConn // indexed by worker id; only higher ids
	stats  counters

	ctx    context.Context // lives until Close
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed and wg.Go after Close began
	closed bool
	wg     sync.WaitGroup

	nmu    sync.Mutex
	notify chan struct{} // closed and replaced on every delivery or failure

	closeOnce sync.Once
}

// NewMesh joins the mesh described by cfg and returns once a stream to
// every present peer is open, or fails when ctx ends first. The lower id of
// each pair dials the higher one, retrying while the peer is not up yet.
func NewMesh(ctx context.Context, cfg MeshConfig) (*Mesh, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Addrs = append([]string(nil), cfg.Addrs...)
	m := &Mesh{
		cfg:    cfg,
		self:   cfg.Self,
		logger: cfg.Logger,
		links:  make([]*link, len(cfg.Addrs)),
		conns:  make([]*grpc.ClientConn, len(cfg.Addrs)),
		notify: make(chan struct{}),
	}
	if m.logger == nil {
		m.logger = slog.Default()
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for p, addr := range cfg.Addrs {
		if p != m.self && addr != "" {
			m.links[p] = newLink(m, p)
		}
	}
	if cfg.Listener != nil {
		m.srv = grpc.NewServer(cfg.ServerOptions...)
		m.svc = NewService()
		m.svc.Register(m.srv)
		m.wg.Go(func() { _ = m.srv.Serve(cfg.Listener) })
	} else {
		m.svc = cfg.Service
	}
	dialOpts := cfg.DialOptions
	if dialOpts == nil {
		dialOpts = DefaultDialOptions()
	}
	for p := m.self + 1; p < len(cfg.Addrs); p++ {
		if m.links[p] == nil {
			continue
		}
		conn, err := grpc.NewClient(cfg.Addrs[p], dialOpts...)
		if err != nil {
			m.Close()
			return nil, invalidf("worker %d address %q: %v", p, cfg.Addrs[p], err)
		}
		m.conns[p] = conn
	}
	if err := m.svc.attach(m); err != nil {
		m.Close()
		return nil, err
	}
	for p, conn := range m.conns {
		if conn != nil {
			m.wg.Go(func() { m.dial(p, conn) })
		}
	}
	for p, l := range m.links {
		if l == nil {
			continue
		}
		select {
		case <-l.up:
			if err := l.failure(); err != nil {
				m.Close()
				return nil, fmt.Errorf("collective: worker %d joining mesh epoch %d: %w", m.self, cfg.Epoch, err)
			}
		case <-ctx.Done():
			m.Close()
			return nil, fmt.Errorf("collective: worker %d waiting for worker %d: %w", m.self, p, ctxError(ctx))
		}
	}
	return m, nil
}

// DefaultDialOptions are the dial options used when MeshConfig.DialOptions
// is nil: plaintext, as inside a cluster network.
func DefaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
}

// Self returns this worker's id.
func (m *Mesh) Self() int { return m.self }

// Size returns the number of worker ids (len(MeshConfig.Addrs)).
func (m *Mesh) Size() int { return len(m.links) }

// Epoch returns the mesh generation.
func (m *Mesh) Epoch() uint64 { return m.cfg.Epoch }

// WireDType returns the dtype activations travel in.
func (m *Mesh) WireDType() DType { return m.cfg.WireDType }

// LostPeers lists the peers whose links failed (lost, or broken by a
// protocol violation), plus absent workers.
func (m *Mesh) LostPeers() []int {
	var lost []int
	for p, l := range m.links {
		if p == m.self {
			continue
		}
		if l == nil || l.failure() != nil {
			lost = append(lost, p)
		}
	}
	return lost
}

// QueuedBytes returns the bytes this worker holds for its peers: messages
// received ahead of the operations that consume them plus messages being
// reassembled, summed over the links (each bounded by
// MeshConfig.MaxQueuedBytes).
func (m *Mesh) QueuedBytes() int64 {
	var n int64
	for _, l := range m.links {
		if l != nil {
			n += l.heldBytes()
		}
	}
	return n
}

// Stats returns a snapshot of the traffic counters.
func (m *Mesh) Stats() Stats { return m.stats.snapshot() }

// ResetStats zeroes the traffic counters.
func (m *Mesh) ResetStats() { m.stats.reset() }

// Close ends every stream, stops every goroutine the mesh started (and its
// own server, if any) and fails operations in flight with ErrClosed. Peers
// see ErrPeerLost. Frames still buffered in the transport may be dropped,
// so close a generation after its last operation completed on every
// member. It is idempotent and always returns nil.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.svc.detach(m)
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.cancel()
		for p, l := range m.links {
			if l != nil {
				l.fail(fmt.Errorf("%w: link to worker %d", ErrClosed, p))
			}
		}
		if m.srv != nil {
			m.srv.Stop()
		}
		for _, c := range m.conns {
			if c != nil {
				_ = c.Close()
			}
		}
		m.wg.Wait()
	})
	return nil
}

// spawn runs f in a goroutine Close waits for; false once Close began.
func (m *Mesh) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Go(f)
	return true
}

func (m *Mesh) waitChan() <-chan struct{} {
	m.nmu.Lock()
	defer m.nmu.Unlock()
	return m.notify
}

func (m *Mesh) broadcast() {
	m.nmu.Lock()
	close(m.notify)
	m.notify = make(chan struct{})
	m.nmu.Unlock()
}

// checkPeer validates a caller's view of the mesh (Hello, Exchange).
// Errors carry a google.rpc.ErrorInfo whose reason names the mismatch.
func (m *Mesh) checkPeer(from, to, size uint32, dt DType, version uint32) error {
	switch {
	case version != ProtocolVersion:
		return peerStatus(codes.FailedPrecondition, "PROTOCOL_VERSION_MISMATCH", "protocol version %d, this worker speaks %d", version, ProtocolVersion)
	case int(size) != len(m.links):
		return peerStatus(codes.FailedPrecondition, "MESH_SIZE_MISMATCH", "mesh size %d, this worker has %d", size, len(m.links))
	case dt != m.cfg.WireDType:
		return peerStatus(codes.FailedPrecondition, "WIRE_DTYPE_MISMATCH", "wire dtype %v, this worker uses %v", dt, m.cfg.WireDType)
	case int(to) != m.self:
		return peerStatus(codes.FailedPrecondition, "WRONG_WORKER", "this is worker %d, not %d: wrong address", m.self, to)
	case int(from) >= m.self || m.links[from] == nil:
		return peerStatus(codes.InvalidArgument, "UNEXPECTED_CALLER", "worker %d is not expected to call worker %d", from, m.self)
	}
	return nil
}

// peerStatus builds a PeerService error with an ErrorInfo detail.
func peerStatus(c codes.Code, reason, format string, args ...any) error {
	st := status.Newf(c, format, args...)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "moemesh.v1.PeerService"}); err == nil {
		st = d
	}
	return st.Err()
}

// accept serves an Exchange stream opened by a lower-numbered peer, for
// the life of the link.
func (m *Mesh) accept(from int, stream moemeshv1.PeerService_ExchangeServer) error {
	if from < 0 || from >= m.self || m.links[from] == nil {
		return peerStatus(codes.InvalidArgument, "UNEXPECTED_CALLER", "worker %d is not expected to call worker %d", from, m.self)
	}
	l := m.links[from]
	if err := stream.SendHeader(metadata.Pairs(mdAccepted, "1")); err != nil {
		return err
	}
	kill := make(chan struct{})
	var once sync.Once
	senderDone, err := l.start(stream, func() { once.Do(func() { close(kill) }) })
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return status.Error(codes.Unavailable, err.Error())
		}
		return status.Error(codes.AlreadyExists, err.Error())
	}
	recvDone := make(chan struct{})
	if !m.spawn(func() {
		defer close(recvDone)
		l.recvLoop(stream)
	}) {
		l.fail(fmt.Errorf("%w: link to worker %d", ErrClosed, from))
		<-senderDone
		return status.Error(codes.Unavailable, "mesh closed")
	}
	select {
	case <-recvDone:
	case <-kill:
	}
	select {
	case <-senderDone:
	case <-l.sendStalled:
		// The sender is blocked in Send, which returns once this handler
		// has; the mesh's wait group still waits for it.
	}
	return status.Error(codes.Unavailable, "link closed")
}

// dial connects to a higher-numbered peer and runs the link's receive loop
// until the link fails. While the peer's mesh is not up yet it retries.
func (m *Mesh) dial(p int, conn *grpc.ClientConn) {
	l := m.links[p]
	client := moemeshv1.NewPeerServiceClient(conn)
	backoff := 10 * time.Millisecond
	for {
		err := m.connect(l, client)
		if err == nil {
			return
		}
		if m.ctx.Err() != nil {
			l.fail(fmt.Errorf("%w: link to worker %d", ErrClosed, p))
			return
		}
		if status.Code(err) != codes.Unavailable {
			l.fail(fmt.Errorf("%w: connecting to worker %d: %w", ErrPeerLost, p, err))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// connect runs one connection attempt; nil means the link came up and has
// since ended.
func (m *Mesh) connect(l *link, client moemeshv1.PeerServiceClient) error {
	resp, err := client.Hello(m.ctx, &moemeshv1.HelloRequest{
		ProtocolVersion: ProtocolVersion,
		MeshEpoch:       m.cfg.Epoch,
		FromWorker:      uint32(m.self),
		ToWorker:        uint32(l.peer),
		MeshSize:        uint32(len(m.links)),
		WireDtype:       m.cfg.WireDType,
	}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if int(resp.GetWorker()) != l.peer {
		return status.Errorf(codes.FailedPrecondition, "address of worker %d answers as worker %d", l.peer, resp.GetWorker())
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(m.ctx,
		mdEpoch, strconv.FormatUint(m.cfg.Epoch, 10), mdFrom, strconv.Itoa(m.self)))
	stream, err := client.Exchange(sctx, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return err
	}
	md, err := stream.Header()
	if err == nil && len(md.Get(mdAccepted)) == 0 {
		// Rejected without headers: the status comes with Recv.
		_, err = stream.Recv()
		if err == nil {
			err = status.Error(codes.Internal, "Exchange stream not accepted")
		}
	}
	if err != nil {
		cancel()
		return err
	}
	senderDone, err := l.start(stream, cancel)
	if err != nil {
		cancel()
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	l.recvLoop(stream)
	<-senderDone
	return nil
}
