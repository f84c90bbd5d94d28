package collective

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// grpcPrefix is the length prefix gRPC puts before every message: one
// compression flag byte and a 4-byte length.
const grpcPrefix = 5

// maxMessageBytes caps the tensor a peer may announce, so a corrupt shape
// cannot make the receiver allocate without bound.
const maxMessageBytes = 1 << 30

// key identifies one message on a link.
type key struct {
	tag   Tag
	round uint32
}

func (k key) String() string {
	if k.round == 0 {
		return k.tag.String()
	}
	return fmt.Sprintf("%v round %d", k.tag, k.round)
}

// message is a received (reassembled) message.
type message struct {
	key    key
	tensor bool // false: the message carried no tensor
	dtype  DType
	shape  []int64
	data   []byte
	aux    []int32
}

// outMsg is an encoded message ready for a link's sender.
type outMsg struct {
	phase       Phase
	frames      []*moemeshv1.Frame
	tensorBytes int
	wireBytes   int
	done        chan error // buffered(1); receives the send's outcome
}

// tensorData is the wire form of a tensor shared by several outgoing
// messages (an all-gather sends the same bytes to every peer).
type tensorData struct {
	dtype DType
	shape []int64
	raw   []byte
}

// newOut splits a message into frames of at most maxChunk tensor bytes
// (and maxChunk/16 aux entries). t may be nil: an empty message carries no
// tensor.
func newOut(src, dst int, k key, t *tensorData, aux []int32, maxChunk int) *outMsg {
	n := 1
	if t != nil {
		n = max(n, (len(t.raw)+maxChunk-1)/maxChunk)
	}
	auxPer := maxChunk / 16
	n = max(n, (len(aux)+auxPer-1)/auxPer)
	o := &outMsg{phase: k.tag.Phase, frames: make([]*moemeshv1.Frame, n), done: make(chan error, 1)}
	for i := range n {
		f := &moemeshv1.Frame{
			Step:      k.tag.Step,
			Layer:     k.tag.Layer,
			Phase:     k.tag.Phase,
			SrcWorker: uint32(src),
			DstWorker: uint32(dst),
			Seq:       uint32(i),
			Round:     k.round,
		}
		if n > 1 {
			f.Chunks = uint32(n)
		}
		if t != nil {
			lo, hi := min(i*maxChunk, len(t.raw)), min((i+1)*maxChunk, len(t.raw))
			f.Payload = &moemeshv1.Tensor{Dtype: t.dtype, Shape: t.shape, Data: t.raw[lo:hi]}
			o.tensorBytes += hi - lo
		}
		if lo := i * auxPer; lo < len(aux) {
			f.Aux = aux[lo:min(lo+auxPer, len(aux))]
		}
		o.wireBytes += proto.Size(f) + grpcPrefix
		o.frames[i] = f
	}
	return o
}

// assembler rebuilds messages from the frames of one link. The frames of a
// message are contiguous on a stream, so one message is in progress at a
// time. Not safe for concurrent use: only the link's receive loop uses it.
type assembler struct {
	cur    *message
	next   uint32 // next expected seq
	chunks uint32
	filled int
	// held is the bytes reserved for cur (released by the owner when the
	// assembly is abandoned; handed over with the message when it
	// completes).
	held int64
	// reserve, when set, is asked for every byte a message will hold
	// (msgBytes) before it is allocated or kept; an error fails the frame.
	reserve func(n int64) error
}

// msgBytes is the memory a received message holds: its tensor data and
// its aux entries.
func msgBytes(m *message) int64 { return int64(len(m.data)) + 4*int64(len(m.aux)) }

func (a *assembler) take(n int64) error {
	if a.reserve == nil || n == 0 {
		return nil
	}
	return a.reserve(n)
}

// add consumes one frame and returns the message it completes, if any.
func (a *assembler) add(f *moemeshv1.Frame) (*message, error) {
	chunks := max(f.GetChunks(), 1)
	k := key{tag: Tag{Step: f.GetStep(), Layer: f.GetLayer(), Phase: f.GetPhase()}, round: f.GetRound()}
	p := f.GetPayload()
	if a.cur == nil {
		if f.GetSeq() != 0 {
			return nil, protocolf("chunk %d of a message (%v) whose start was never sent", f.GetSeq(), k)
		}
		if k.tag.Phase == moemeshv1.Phase_PHASE_UNSPECIFIED {
			return nil, protocolf("frame (%v) without a phase", k)
		}
		m := &message{key: k}
		if p != nil {
			total, err := tensorBytes(p)
			if err != nil {
				return nil, err
			}
			m.tensor, m.dtype, m.shape = true, p.GetDtype(), p.GetShape()
			if chunks == 1 {
				if len(p.GetData()) != total {
					return nil, protocolf("message (%v) has %d data bytes, its shape %v needs %d", k, len(p.GetData()), m.shape, total)
				}
				m.data, m.aux = p.GetData(), f.GetAux()
				if err := a.take(msgBytes(m)); err != nil {
					return nil, err
				}
				return m, nil
			}
			// Reserve what the shape announces before allocating it.
			if err := a.take(int64(total)); err != nil {
				return nil, err
			}
			a.held = int64(total)
			m.data = make([]byte, total)
		} else if chunks == 1 {
			m.aux = f.GetAux()
			if err := a.take(msgBytes(m)); err != nil {
				return nil, err
			}
			return m, nil
		}
		a.cur, a.next, a.chunks, a.filled = m, 0, chunks, 0
	}
	m := a.cur
	if k != m.key || f.GetSeq() != a.next || chunks != a.chunks {
		return nil, protocolf("frame (%v, chunk %d of %d) interleaved with message (%v, chunk %d of %d)",
			k, f.GetSeq(), chunks, m.key, a.next, a.chunks)
	}
	if (p != nil) != m.tensor || (p != nil && (p.GetDtype() != m.dtype || !slices.Equal(p.GetShape(), m.shape))) {
		return nil, protocolf("chunk %d of message (%v) changes the tensor's presence, dtype or shape", a.next, k)
	}
	if p != nil {
		if a.filled+len(p.GetData()) > len(m.data) {
			return nil, protocolf("chunks of message (%v) carry more than the %d bytes its shape needs", k, len(m.data))
		}
		a.filled += copy(m.data[a.filled:], p.GetData())
	}
	if n := 4 * int64(len(f.GetAux())); n > 0 {
		if err := a.take(n); err != nil {
			return nil, err
		}
		a.held += n
		m.aux = append(m.aux, f.GetAux()...)
	}
	a.next++
	if a.next < a.chunks {
		return nil, nil
	}
	a.cur = nil
	if a.filled != len(m.data) {
		return nil, protocolf("message (%v) has %d data bytes, its shape %v needs %d", k, a.filled, m.shape, len(m.data))
	}
	a.held = 0 // handed over with m
	return m, nil
}

// tensorBytes validates a tensor header and returns its data size.
func tensorBytes(t *moemeshv1.Tensor) (int, error) {
	es := elemSize(t.GetDtype())
	if es == 0 {
		return 0, protocolf("tensor dtype %v", t.GetDtype())
	}
	n := int64(es)
	for _, d := range t.GetShape() {
		if d < 0 {
			return 0, protocolf("tensor shape %v has a negative dimension", t.GetShape())
		}
		if d != 0 && n > maxMessageBytes/d {
			return 0, protocolf("tensor shape %v exceeds %d bytes", t.GetShape(), maxMessageBytes)
		}
		n *= d
	}
	return int(n), nil
}
