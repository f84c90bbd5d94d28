package tokenizer

import "unicode/utf8"

// byteToRune is GPT-2's byte-level alphabet: every byte maps to a printable
// rune, so that a byte string becomes a Unicode string without whitespace or
// control characters. Printable Latin-1 bytes map to themselves; the other 68
// bytes map, in order, to U+0100 and up.
var byteToRune [256]rune

// runeToByte inverts byteToRune.
var runeToByte = map[rune]byte{}

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelDecode returns the bytes a vocabulary string stands for. As in
// Hugging Face's ByteLevel decoder, a token holding any rune outside the
// byte-level alphabet is taken verbatim as UTF-8.
func byteLevelDecode(tok string) []byte {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeToByte[r]
		if !ok {
			return []byte(tok)
		}
		out = append(out, b)
	}
	return out
}

// byteLevelEncode maps bytes to their byte-level string.
func byteLevelEncode(b []byte) string {
	out := make([]rune, len(b))
	for i, c := range b {
		out[i] = byteToRune[c]
	}
	return string(out)
}

// appendLossy appends src to dst as valid UTF-8, replacing each maximal
// ill-formed subsequence with one U+FFFD (Unicode §3.9 "maximal subpart"
// practice, as Rust's String::from_utf8_lossy and the WHATWG decoder do).
// When final is false a trailing sequence that could still be completed by
// later bytes is left unconsumed; n is the number of bytes of src consumed.
func appendLossy(dst, src []byte, final bool) (out []byte, n int) {
	i := 0
	for i < len(src) {
		b := src[i]
		if b < utf8.RuneSelf {
			dst = append(dst, b)
			i++
			continue
		}
		need, lo, hi := seqInfo(b)
		if need == 0 {
			dst = append(dst, "\uFFFD"...)
			i++
			continue
		}
		j := i + 1
		for k := 0; k < need; k++ {
			if j >= len(src) {
				if !final {
					return dst, i
				}
				break
			}
			c := src[j]
			if k > 0 {
				lo, hi = 0x80, 0xBF
			}
			if c < lo || c > hi {
				break
			}
			j++
		}
		if j-i == need+1 {
			dst = append(dst, src[i:j]...)
		} else {
			dst = append(dst, "\uFFFD"...)
		}
		i = j
	}
	return dst, i
}

// seqInfo returns how many continuation bytes lead byte b needs and the
// allowed range of the first of them (Unicode Table 3-7); need is 0 for a
// byte that cannot start a sequence.
func seqInfo(b byte) (need int, lo, hi byte) {
	switch {
	case b >= 0xC2 && b <= 0xDF:
		return 1, 0x80, 0xBF
	case b == 0xE0:
		return 2, 0xA0, 0xBF
	case b == 0xED:
		return 2, 0x80, 0x9F
	case b >= 0xE1 && b <= 0xEF:
		return 2, 0x80, 0xBF
	case b == 0xF0:
		return 3, 0x90, 0xBF
	case b == 0xF4:
		return 3, 0x80, 0x8F
	case b >= 0xF1 && b <= 0xF3:
		return 3, 0x80, 0xBF
	}
	return 0, 0, 0
}
