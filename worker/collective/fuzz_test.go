package collective

import (
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/proto"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// FuzzAssemble feeds a sequence of wire frames (each a 2-byte length and
// the protobuf bytes of a Frame, as a peer could send them) to the
// reassembler with a budget, as a link's receive loop does: no input may
// panic, reserve beyond the budget, or yield a message whose data does not
// match its shape; a completed message's size is what was reserved for it.
func FuzzAssemble(f *testing.F) {
	seed := func(frames ...*moemeshv1.Frame) []byte {
		var b []byte
		for _, fr := range frames {
			raw, err := proto.Marshal(fr)
			if err != nil {
				f.Fatal(err)
			}
			b = binary.LittleEndian.AppendUint16(b, uint16(len(raw)))
			b = append(b, raw...)
		}
		return b
	}
	one := &moemeshv1.Frame{Step: 1, Phase: attn, Payload: f32Tensor(1, 2, 3, 4), Aux: []int32{7}}
	a := &moemeshv1.Frame{Step: 1, Phase: attn, Chunks: 2, Payload: f32Tensor(1, 2)}
	b := &moemeshv1.Frame{Step: 1, Phase: attn, Chunks: 2, Seq: 1, Payload: f32Tensor(3, 4)}
	a.Payload.Shape, b.Payload.Shape = []int64{4}, []int64{4}
	f.Add(seed(one))
	f.Add(seed(a, b))
	f.Add(seed(a, one))
	f.Add(seed(&moemeshv1.Frame{Step: 2, Phase: attn, Chunks: 3, Aux: []int32{1, 2}}))
	huge := &moemeshv1.Frame{Step: 1, Phase: attn, Chunks: 2, Payload: &moemeshv1.Tensor{Dtype: BF16, Shape: []int64{1 << 40}}}
	f.Add(seed(huge))
	f.Fuzz(func(t *testing.T, in []byte) {
		const budget = 1 << 16
		var held int64
		asm := assembler{reserve: func(n int64) error {
			if n < 0 {
				t.Fatalf("reserve(%d)", n)
			}
			if held+n > budget {
				return ErrQueueFull
			}
			held += n
			return nil
		}}
		for len(in) >= 2 {
			n := int(binary.LittleEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				return
			}
			var fr moemeshv1.Frame
			if err := proto.Unmarshal(in[:n], &fr); err != nil {
				return
			}
			in = in[n:]
			before := held - asm.held
			msg, err := asm.add(&fr)
			if err != nil {
				return // the link fails; nothing more is read
			}
			if msg == nil {
				continue
			}
			if msg.tensor {
				want, err := tensorBytes(&moemeshv1.Tensor{Dtype: msg.dtype, Shape: msg.shape})
				if err != nil || want != len(msg.data) {
					t.Fatalf("message of shape %v has %d bytes (want %d, %v)", msg.shape, len(msg.data), want, err)
				}
			} else if len(msg.data) != 0 {
				t.Fatalf("a message without a tensor has %d data bytes", len(msg.data))
			}
			if got := held - before; got != msgBytes(msg) {
				t.Fatalf("reserved %d bytes for a message holding %d", got, msgBytes(msg))
			}
			held -= msgBytes(msg) // consumed
		}
	})
}

// FuzzDecodeVector checks the receive-side tensor checks and decoders: a
// message accepted by checkVector decodes into exactly its elements for
// either wire dtype, without reading past the data.
func FuzzDecodeVector(f *testing.F) {
	f.Add(uint8(1), int64(2), []byte{0, 0, 128, 63, 0, 0, 0, 64})
	f.Add(uint8(2), int64(3), []byte{128, 63, 0, 64, 0, 0})
	f.Add(uint8(2), int64(-1), []byte{})
	f.Fuzz(func(t *testing.T, dt uint8, n int64, data []byte) {
		p := &moemeshv1.Tensor{Dtype: moemeshv1.DType(dt), Shape: []int64{n}, Data: data}
		total, err := tensorBytes(p)
		if err != nil || total != len(data) {
			return // refused by the assembler
		}
		msg := &message{tensor: true, dtype: p.Dtype, shape: p.Shape, data: data}
		want := int(n)
		if err := checkVector(msg, want, 0); err != nil {
			t.Fatalf("checkVector refused a consistent vector: %v", err)
		}
		out := make([]float32, want+1)
		out[want] = 42 // guard
		decode(out[:want], msg.data, msg.dtype)
		acc := make([]float64, want)
		accumulate(acc, msg)
		if out[want] != 42 {
			t.Fatal("decode wrote past its destination")
		}
		if checkVector(msg, want+1, 0) == nil {
			t.Fatal("checkVector accepted the wrong length")
		}
	})
}
