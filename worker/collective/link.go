package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// frameStream is the part of a client or server Exchange stream a link
// uses. Send is called from the link's sender goroutine only, Recv from its
// receive loop only, which gRPC allows concurrently.
type frameStream interface {
	Send(*moemeshv1.Frame) error
	Recv() (*moemeshv1.Frame, error)
}

// maxAbandoned bounds the keys a link remembers to drop.
const maxAbandoned = 4096

// link is this worker's end of the one stream shared with a peer.
type link struct {
	m    *Mesh
	peer int

	up   chan struct{} // closed once the stream is established or the link failed
	dead chan struct{} // closed when the link fails

	mu        sync.Mutex
	isUp      bool
	err       error      // sticky failure; wraps ErrPeerLost, ErrProtocol or ErrClosed
	queue     []*message // received, not yet consumed, in arrival order
	abandoned map[key]struct{}
	abOrder   []key
	cancel    func() // tears the stream down; set by start
	// held is the bytes of queued messages plus the message in assembly
	// (see MeshConfig.MaxQueuedBytes).
	held int64

	// sendStalled is closed when a Send blocked for StallTimeout; the
	// server side of the stream then ends its handler without waiting for
	// the sender (whose Send only returns once the handler has).
	sendStalled chan struct{}
	stallOnce   sync.Once

	sendq chan *outMsg
}

func newLink(m *Mesh, peer int) *link {
	return &link{
		m:           m,
		peer:        peer,
		up:          make(chan struct{}),
		dead:        make(chan struct{}),
		abandoned:   make(map[key]struct{}),
		sendq:       make(chan *outMsg, 64),
		sendStalled: make(chan struct{}),
	}
}

// start marks the link established on stream and launches its sender.
// cancel must make the stream's Send and Recv return. It returns a channel
// closed when the sender has exited, or an error when the link cannot be
// (re)used.
func (l *link) start(s frameStream, cancel func()) (<-chan struct{}, error) {
	l.mu.Lock()
	if l.err != nil || l.isUp {
		err := l.err
		l.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("a stream with worker %d is already open", l.peer)
		}
		return nil, err
	}
	l.isUp, l.cancel = true, cancel
	close(l.up)
	l.mu.Unlock()
	done := make(chan struct{})
	if !l.m.spawn(func() {
		defer close(done)
		l.sendLoop(s)
	}) {
		l.fail(fmt.Errorf("%w: link to worker %d", ErrClosed, l.peer))
		return nil, ErrClosed
	}
	l.m.logger.Debug("collective: link up", "self", l.m.self, "peer", l.peer)
	return done, nil
}

// fail marks the link failed with err (first failure wins), wakes every
// waiter and tears the stream down.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	l.err = err // messages already queued stay consumable
	if !l.isUp {
		close(l.up)
	}
	close(l.dead)
	cancel := l.cancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	l.m.broadcast()
	if !errors.Is(err, ErrClosed) {
		l.m.logger.Warn("collective: link failed", "self", l.m.self, "peer", l.peer, "err", err)
		if f := l.m.cfg.OnPeerLost; f != nil {
			f(l.peer, err)
		}
	}
}

// failure returns the link's sticky error, or nil.
func (l *link) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// sendLoop writes queued messages to the stream, one whole message at a
// time, until the link fails. A Send blocked for StallTimeout (the peer
// stopped reading) fails the link with ErrStalled. On exit the messages
// still queued are told the link's error, so nothing waits on them.
func (l *link) sendLoop(s frameStream) {
	stall := l.m.cfg.StallTimeout
	var timer *time.Timer
	if stall > 0 {
		timer = time.AfterFunc(time.Hour, func() {
			l.stallOnce.Do(func() { close(l.sendStalled) })
			l.fail(fmt.Errorf("%w: %w: worker %d has not read for %v", ErrPeerLost, ErrStalled, l.peer, stall))
		})
		timer.Stop()
		defer timer.Stop()
	}
	defer l.drainSends()
	for {
		select {
		case o := <-l.sendq:
			var err error
			for _, f := range o.frames {
				if timer != nil {
					timer.Reset(stall)
				}
				err = s.Send(f)
				if timer != nil && !timer.Stop() {
					// The stall fired while this Send was blocked.
					err = l.failure()
				}
				if err != nil {
					break
				}
			}
			if err != nil {
				err = fmt.Errorf("%w: sending to worker %d: %w", ErrPeerLost, l.peer, err)
				l.fail(err)
				o.done <- err
				continue
			}
			l.m.stats.sent(o)
			o.done <- nil
		case <-l.dead:
			return
		}
	}
}

// drainSends fails every message still queued for the sender.
func (l *link) drainSends() {
	err := l.failure()
	if err == nil {
		err = fmt.Errorf("%w: link to worker %d", ErrClosed, l.peer)
	}
	for {
		select {
		case o := <-l.sendq:
			o.done <- err
		default:
			return
		}
	}
}

// recvLoop reads frames until the stream breaks, reassembling messages and
// queueing them for the operations. Every byte a message will hold is
// reserved against MaxQueuedBytes before it is allocated; a message in
// progress whose next chunk does not come within StallTimeout fails the
// link with ErrStalled.
func (l *link) recvLoop(s frameStream) {
	a := assembler{reserve: l.reserve}
	defer func() { l.release(a.held) }()
	stall := l.m.cfg.StallTimeout
	var timer *time.Timer
	if stall > 0 {
		timer = time.AfterFunc(time.Hour, func() {
			l.fail(fmt.Errorf("%w: %w: worker %d stopped mid-message for %v", ErrPeerLost, ErrStalled, l.peer, stall))
		})
		timer.Stop()
		defer timer.Stop()
	}
	for {
		f, err := s.Recv()
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream closed by peer")
			}
			l.fail(fmt.Errorf("%w: worker %d: %w", ErrPeerLost, l.peer, err))
			return
		}
		if int(f.GetSrcWorker()) != l.peer || int(f.GetDstWorker()) != l.m.self {
			l.fail(protocolf("frame from worker %d to worker %d on the stream between %d and %d",
				f.GetSrcWorker(), f.GetDstWorker(), l.peer, l.m.self))
			return
		}
		l.m.stats.recvFrame(f.GetPhase(), len(f.GetPayload().GetData()), proto.Size(f)+grpcPrefix)
		msg, err := a.add(f)
		if err != nil {
			l.fail(fmt.Errorf("from worker %d: %w", l.peer, err))
			return
		}
		if timer != nil {
			if a.cur != nil {
				timer.Reset(stall)
			} else {
				timer.Stop()
			}
		}
		if msg != nil {
			l.deliver(msg)
		}
	}
}

// reserve accounts n more bytes held for the peer, refusing past
// MaxQueuedBytes.
func (l *link) reserve(n int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if limit := l.m.cfg.MaxQueuedBytes; l.held+n > limit {
		return fmt.Errorf("%w: %w: worker %d would make this worker hold %d bytes for it, more than MaxQueuedBytes (%d)",
			ErrProtocol, ErrQueueFull, l.peer, l.held+n, limit)
	}
	l.held += n
	return nil
}

func (l *link) release(n int64) {
	if n == 0 {
		return
	}
	l.mu.Lock()
	l.held -= n
	l.mu.Unlock()
}

// heldBytes returns the bytes the link holds for its peer.
func (l *link) heldBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// deliver queues a complete message, or drops it when its operation was
// abandoned here.
func (l *link) deliver(msg *message) {
	l.m.stats.recvMessage(msg.key.tag.Phase)
	l.mu.Lock()
	if l.err != nil {
		l.held -= msgBytes(msg)
		l.mu.Unlock()
		return
	}
	if _, ok := l.abandoned[msg.key]; ok {
		delete(l.abandoned, msg.key)
		l.held -= msgBytes(msg)
		l.mu.Unlock()
		return
	}
	if len(l.queue) >= l.m.cfg.MaxPendingMessages {
		l.held -= msgBytes(msg)
		l.mu.Unlock()
		l.fail(fmt.Errorf("%w: %w: worker %d is %d messages ahead, more than MaxPendingMessages (last %v)",
			ErrProtocol, ErrQueueFull, l.peer, len(l.queue)+1, msg.key))
		return
	}
	l.queue = append(l.queue, msg)
	l.mu.Unlock()
	l.m.broadcast()
}

// take returns the message for k if it is at the head of the queue, or
// nil if nothing is queued. Messages that arrived before the link failed
// are still returned; after them, the link's error is. Messages must be
// consumed in the order they were sent, so a different head means the
// peers disagree about the sequence of operations: the link is failed with
// ErrProtocol.
func (l *link) take(k key) (*message, error) {
	l.mu.Lock()
	if len(l.queue) == 0 {
		err := l.err
		l.mu.Unlock()
		return nil, err
	}
	head := l.queue[0]
	if head.key == k {
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.held -= msgBytes(head)
		l.mu.Unlock()
		return head, nil
	}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	err := protocolf("worker %d sent (%v) where (%v) was expected", l.peer, head.key, k)
	l.fail(err)
	return nil, err
}

// abandon forgets the message for k: removed if queued, dropped on arrival
// otherwise. Operations that fail call it for every message they did not
// consume, so the link stays in step for the next operation.
func (l *link) abandon(k key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, m := range l.queue {
		if m.key == k {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			l.held -= msgBytes(m)
			return
		}
	}
	if _, ok := l.abandoned[k]; ok {
		return
	}
	if len(l.abOrder) >= maxAbandoned {
		delete(l.abandoned, l.abOrder[0])
		l.abOrder = l.abOrder[1:]
	}
	l.abandoned[k] = struct{}{}
	l.abOrder = append(l.abOrder, k)
}

// enqueue hands o to the sender. It does not wait for the send.
func (l *link) enqueue(ctx context.Context, o *outMsg) error {
	select {
	case <-l.dead:
		return l.failure()
	default:
	}
	select {
	case l.sendq <- o:
		return nil
	case <-l.dead:
		return l.failure()
	case <-ctx.Done():
		return ctxError(ctx)
	}
}
