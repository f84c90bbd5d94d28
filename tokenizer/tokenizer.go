package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/moemesh/moemesh/internal/jinja"
)

// Tokenizer is a byte-level BPE tokenizer with its chat template. It is safe
// for concurrent use.
type Tokenizer struct {
	nfc       bool     // NFC-normalize text outside added tokens
	split     splitter // nil: the whole text is one word
	model     *bpe
	rawAdded  addedMatcher // added tokens matched in the raw text
	normAdded addedMatcher // added tokens matched after normalization

	vocab      map[string]int // byte-level string -> id (model vocab only)
	addedIDs   map[string]int // added token content -> id
	added      []addedToken
	tokens     []string // id -> vocab string or added-token content
	known      []bool   // id -> whether tokens[id] is a token
	tokenBytes [][]byte // id -> the bytes it decodes to

	eosToken, bosToken, padToken string
	eosIDs                       []int
	template                     *jinja.Template
}

// Encode returns the ids of text without adding any special tokens.
// Added-token strings inside text (<|im_start|>, <think>, ...) map to their
// ids. Text outside them is NFC-normalized, pre-split and BPE-encoded. Invalid
// UTF-8 in text is first replaced by U+FFFD, one per maximal ill-formed
// subsequence, as decoding does.
func (t *Tokenizer) Encode(text string) []int {
	if !utf8.ValidString(text) {
		b, _ := appendLossy(nil, []byte(text), true)
		text = string(b)
	}
	ids := make([]int, 0, len(text)/3+1)
	var segs []segment
	var words []string
	for _, seg := range t.rawAdded.split(text, nil) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		s := seg.text
		if t.nfc && !norm.NFC.IsNormalString(s) {
			s = norm.NFC.String(s)
		}
		segs = t.normAdded.split(s, segs[:0])
		for _, ns := range segs {
			if ns.id >= 0 {
				ids = append(ids, ns.id)
				continue
			}
			if t.split == nil {
				ids = t.model.encodeWord(ns.text, ids)
				continue
			}
			words = t.split.split(ns.text, words[:0])
			for _, w := range words {
				ids = t.model.encodeWord(w, ids)
			}
		}
	}
	return ids
}

// Decode returns the text of ids. Bytes that do not form valid UTF-8 become
// U+FFFD, one per maximal ill-formed subsequence, exactly as Hugging Face's
// decoder does. Ids that name no token are skipped; use CheckIDs first where
// they must be reported.
func (t *Tokenizer) Decode(ids []int) string {
	var raw []byte
	for _, id := range ids {
		if b, ok := t.bytesOf(id); ok {
			raw = append(raw, b...)
		}
	}
	if utf8.Valid(raw) {
		return string(raw)
	}
	out, _ := appendLossy(make([]byte, 0, len(raw)+8), raw, true)
	return string(out)
}

// CheckIDs returns an error wrapping ErrIDOutOfRange for the first id that
// names no token.
func (t *Tokenizer) CheckIDs(ids []int) error {
	for i, id := range ids {
		if _, ok := t.bytesOf(id); !ok {
			return fmt.Errorf("%w: ids[%d] = %d (vocabulary size %d)", ErrIDOutOfRange, i, id, t.VocabSize())
		}
	}
	return nil
}

func (t *Tokenizer) bytesOf(id int) ([]byte, bool) {
	if id < 0 || id >= len(t.known) || !t.known[id] {
		return nil, false
	}
	return t.tokenBytes[id], true
}

// TokenID returns the id of a token given as its text: an added token's
// content ("<|im_end|>") or the text of a vocabulary token (" the").
func (t *Tokenizer) TokenID(s string) (int, bool) {
	if id, ok := t.addedIDs[s]; ok {
		return id, true
	}
	id, ok := t.vocab[byteLevelEncode([]byte(s))]
	return id, ok
}

// Token returns the vocabulary string of id: byte-level text (" the" is
// "Ġthe") for model tokens, the content for added tokens.
func (t *Tokenizer) Token(id int) (string, bool) {
	if id < 0 || id >= len(t.known) || !t.known[id] {
		return "", false
	}
	return t.tokens[id], true
}

// VocabSize returns one more than the largest token id, added tokens
// included (151669 for Qwen3; the model's embedding has more rows).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// EOSIDs returns the ids that end generation: eos_token of
// tokenizer_config.json, then <|endoftext|> when the vocabulary has it. For
// Qwen3: [151645 (<|im_end|>), 151643 (<|endoftext|>)]. The caller may keep
// the slice.
func (t *Tokenizer) EOSIDs() []int { return append([]int(nil), t.eosIDs...) }

// IsSpecial reports whether id is an added token marked special
// (<|im_start|>, <|endoftext|>, ...).
func (t *Tokenizer) IsSpecial(id int) bool {
	for _, a := range t.added {
		if a.id == id {
			return a.special
		}
	}
	return false
}

// StreamDecoder turns ids into text as they arrive without ever splitting a
// UTF-8 character: bytes of an unfinished character wait for the next ids.
// The concatenation of all Push results and Flush equals Decode of all ids.
// A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
}

// NewStreamDecoder returns a decoder for one sequence.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Push adds one id and returns the text completed by it (often "", for
// example in the middle of a multi-byte character). Unknown ids are skipped,
// as in Decode.
func (d *StreamDecoder) Push(id int) string {
	b, ok := d.t.bytesOf(id)
	if !ok {
		return ""
	}
	d.pending = append(d.pending, b...)
	if len(d.pending) == len(b) && utf8.Valid(b) {
		d.pending = d.pending[:0]
		return string(b)
	}
	out, n := appendLossy(nil, d.pending, false)
	d.pending = d.pending[:copy(d.pending, d.pending[n:])]
	return string(out)
}

// Flush returns what is left: an unfinished character becomes U+FFFD.
// The decoder is then empty and may be reused.
func (d *StreamDecoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	out, _ := appendLossy(nil, d.pending, true)
	d.pending = d.pending[:0]
	return string(out)
}

// String describes the tokenizer for logs.
func (t *Tokenizer) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "byte-level BPE, %d tokens (%d added), %d merges", len(t.tokens), len(t.added), len(t.model.merges))
	if t.template != nil {
		b.WriteString(", chat template")
	}
	return b.String()
}
