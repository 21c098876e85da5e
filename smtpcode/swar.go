package smtpcode

// Eight-bytes-at-a-time tests for the passes over a reply's text. Each returns a word with
// the high bit (0x80) set in exactly the bytes that pass, so that
// bits.TrailingZeros64(m)/8 is the index of the first one. They work on
// seven-bit values plus a check of the original high bit, so no carry
// crosses from one byte into the next.

const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
	low7  = 0x7f7f7f7f7f7f7f7f
)

// load64 reads s[i:i+8] little-endian (the compiler makes it one load).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// spaceBytes marks the bytes of w that are ' '.
func spaceBytes(w uint64) uint64 {
	x := w ^ (' ' * lows) // zero where w has a space
	return ^((x&low7 + low7) | x | low7)
}

// codeDigitBytes marks the bytes of w that are '2' to '5', the first digit
// of a failure or success reply code.
func codeDigitBytes(w uint64) uint64 {
	h := w & low7
	atLeast2 := h + (0x80-'2')*lows // high bit set when h >= '2'
	past5 := h + (0x80-'6')*lows    // high bit set when h >= '6'
	return (atLeast2 ^ past5) &^ w & highs
}
