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

// digitBytes marks the bytes of w that are '0' to '9'.
func digitBytes(w uint64) uint64 {
	h := w & low7
	atLeast0 := h + (0x80-'0')*lows
	past9 := h + (0x80-'9'-1)*lows
	return (atLeast0 ^ past9) &^ w & highs
}

// lowerWord lower-cases the ASCII letters of w, leaving every other byte
// as it is (as lowerTable does).
func lowerWord(w uint64) uint64 {
	h := w & low7
	atLeastA := h + (0x80-'A')*lows
	pastZ := h + (0x80-'Z'-1)*lows
	upper := (atLeastA ^ pastZ) &^ w & highs
	return w | upper>>2 // 0x80>>2 is 0x20, the case bit
}

// controlBytes marks the bytes of w below '!': the space and the control
// characters, white space among them.
func controlBytes(w uint64) uint64 {
	h := w & low7
	return ^(h + (0x80-'!')*lows) &^ w & highs
}
