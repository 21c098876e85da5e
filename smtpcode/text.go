package smtpcode

import (
	"bytes"
	"encoding/binary"
	"time"
)

// textIndex is a reply's text as rules see it: lower-cased, white space
// collapsed (built on first use), and, once several needles have been
// looked for, the set of every classifier needle it contains, found in one
// pass (see needleIndex). The first searches go straight to bytes.Contains,
// so a reply that a provider rule with a code condition claims at once
// never pays for the pass, and a rule without text conditions never pays
// for the normalization. The first rule with text conditions only (see
// compiledRule.scanFirst) starts the pass at once: many such rules follow.
//
// The normalized text lives in buf (or long, past len(buf)) and is sliced
// on each use rather than stored as a slice of buf, so that a textIndex on
// the stack stays there.
type textIndex struct {
	raw       string
	n         int  // length of the normalized text in buf
	norm      bool // the text has been normalized
	digitWord bool // a word of the normalized text starts with a digit
	long      []byte
	searches  int
	scanned   bool
	found     [maxIndexedNeedles / 64]uint64 // by needle id, once scanned
	live      [maxSkippableRules / 64]uint64 // by rule, once scanned (see needleIndex.live)
	buf       [512]byte
}

// text returns the normalized text.
func (ti *textIndex) text() []byte {
	if !ti.norm {
		ti.normalize()
	}
	if ti.long != nil {
		return ti.long
	}
	return ti.buf[:ti.n]
}

func (ti *textIndex) normalize() {
	if len(ti.raw) > len(ti.buf) {
		ti.long, ti.digitWord = normalizeText(nil, ti.raw)
	} else {
		var t []byte
		t, ti.digitWord = normalizeText(ti.buf[:0], ti.raw)
		ti.n = len(t)
	}
	ti.norm = true
}

// directSearches are done before the one pass that finds every needle.
const directSearches = 4

// scan finds every needle of ix in the text in one pass.
func (ti *textIndex) scan(ix *needleIndex) {
	ix.scan(ti.text(), &ti.found)
	ix.live(&ti.found, &ti.live)
	ti.scanned = true
}

// contains reports whether needle id of ix occurs in the text.
func (ti *textIndex) contains(ix *needleIndex, id int32) bool {
	if id < maxIndexedNeedles {
		if !ti.scanned && ti.searches >= directSearches {
			ti.scan(ix)
		}
		if ti.scanned {
			return ti.found[id>>6]&(1<<(id&63)) != 0
		}
		ti.searches++
	}
	return bytes.Contains(ti.text(), ix.needles[id])
}

// normalize appends s to dst lower-cased (ASCII) with every run of white
// space turned into one space and leading/trailing space dropped.
func normalize(dst []byte, s string) []byte {
	out, _ := normalizeText(dst, s)
	return out
}

// normalizeText is normalize that also reports whether a word of the
// result starts with a digit, as every delay retryHint reads does: the
// hint scan is skipped without another pass when none does.
func normalizeText(dst []byte, s string) (out []byte, digitWord bool) {
	if cap(dst)-len(dst) < len(s) {
		dst = append(make([]byte, 0, len(dst)+len(s)), dst...)
	}
	n := len(dst)
	out = dst[:n+len(s)]
	if digitWord, ok := lowerSimple(out[n:], s); ok {
		return out, digitWord
	}
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' && (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			space = n > len(dst)
			continue
		}
		if space {
			out[n] = ' '
			n++
			space = false
			digitWord = digitWord || isDigit(c)
		}
		out[n] = lowerTable[c]
		n++
	}
	return out[:n], digitWord
}

// lowerSimple writes s lower-cased into dst (len(dst) == len(s)) when
// that is all normalizing s takes, as for most one-line replies: no white
// space but single spaces between words. It works eight bytes at a time
// and also reports whether a word of s starts with a digit. ok is false,
// and dst garbage, when s needs the byte-by-byte normalization.
//
// Each word is read once: whether the byte before a word's first byte is
// a space is carried over from the word before.
func lowerSimple(dst []byte, s string) (digitWord, ok bool) {
	if s == "" {
		return false, true
	}
	if isSpace(s[0]) || isSpace(s[len(s)-1]) {
		return false, false
	}
	var digits, odd, carry uint64
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := load64(s, i)
		// Byte tests as in swar.go, sharing their first steps: h holds
		// each byte's seven low bits, ascii the high bit of the bytes
		// below 0x80. h + (0x80-c) has a byte's high bit set when h >= c
		// (no carry leaves a byte), so the XOR of two such sums marks a
		// range.
		h, ascii := w&low7, ^w&highs
		atLeastBang := h + (0x80-'!')*lows
		controls := ascii &^ atLeastBang // below '!'
		spaces := ascii & (atLeastBang ^ (h + (0x80-' ')*lows))
		afterSpace := spaces<<8 | carry
		carry = spaces >> 56
		digits |= afterSpace & ascii & ((h + (0x80-'0')*lows) ^ (h + (0x80-'9'-1)*lows))
		odd |= controls ^ spaces | afterSpace&spaces
		upper := ascii & ((h + (0x80-'A')*lows) ^ (h + (0x80-'Z'-1)*lows))
		binary.LittleEndian.PutUint64(dst[i:], w|upper>>2)
	}
	if odd != 0 {
		return false, false
	}
	digitWord = digits != 0
	for ; i < len(s); i++ {
		c := s[i]
		// s[0] is no space: a space has a byte before it.
		if c < ' ' || c == ' ' && s[i-1] == ' ' {
			return false, false
		}
		dst[i] = lowerTable[c]
		if i > 0 && s[i-1] == ' ' && isDigit(c) {
			digitWord = true
		}
	}
	return digitWord, true
}

// lowerTable maps ASCII upper case to lower case and every other byte to
// itself.
var lowerTable = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if i >= 'A' && i <= 'Z' {
			t[i] = byte(i) + 'a' - 'A'
		}
	}
	return t
}()

// hintTriggers precede a delay the server asks for: "try again in 92
// seconds", "retry in 5 minutes", "Greylisted for 300 seconds",
// "please come back in 00:05:00" (milter-greylist).
var hintTriggers = [...][]byte{
	[]byte("again in "),
	[]byte("retry in "),
	[]byte("retry after "),
	[]byte("again after "),
	[]byte("back in "),
	[]byte("greylisted for "),
	[]byte("wait "),
	[]byte("try later in "),
	[]byte("deferred for "),
}

// maxHint caps what a server's text can ask for.
const maxHint = 24 * time.Hour

// retryHint returns the first delay the reply's text asks for, or 0.
func (ti *textIndex) retryHint() time.Duration {
	if ti.norm && !ti.digitWord || !ti.norm && !hasNumberWord(ti.raw) {
		return 0
	}
	return retryHint(ti.text())
}

// hasNumberWord reports whether a word of s starts with a digit, as every
// delay retryHint reads does.
func hasNumberWord(s string) bool {
	for i := 1; i < len(s); i++ {
		if isDigit(s[i]) && isSpace(s[i-1]) {
			return true
		}
	}
	return false
}

// retryHint returns the first delay the normalized text t asks for, or 0.
func retryHint(t []byte) time.Duration {
	// Look only where a number starts after a space, then check the words
	// before it: one pass, whatever the number of triggers.
	for i := 1; i < len(t); i++ {
		if t[i-1] != ' ' || !isDigit(t[i]) {
			continue
		}
		for _, tr := range hintTriggers {
			if bytes.HasSuffix(t[:i], tr) {
				if d := parseDelay(t[i:]); d > 0 {
					return d
				}
				break
			}
		}
	}
	return 0
}

// parseDelay reads "92 seconds", "5 min", "1h", "00:05:00" or "300s" at the
// start of b (lower case). A number without a unit is not a delay.
func parseDelay(b []byte) time.Duration {
	n, i := readInt(b, 0)
	if i == 0 {
		return 0
	}
	if i < len(b) && b[i] == ':' {
		// hh:mm:ss or mm:ss
		parts := [3]int{n}
		k := 1
		for k < 3 && i < len(b) && b[i] == ':' {
			v, j := readInt(b, i+1)
			if j == i+1 {
				return 0
			}
			parts[k], i, k = v, j, k+1
		}
		var d time.Duration
		switch k {
		case 2:
			d = time.Duration(parts[0])*time.Minute + time.Duration(parts[1])*time.Second
		case 3:
			d = time.Duration(parts[0])*time.Hour + time.Duration(parts[1])*time.Minute + time.Duration(parts[2])*time.Second
		}
		return capHint(d)
	}
	if i < len(b) && b[i] == ' ' {
		i++
	}
	j := i
	for j < len(b) && b[j] >= 'a' && b[j] <= 'z' {
		j++
	}
	var unit time.Duration
	switch string(b[i:j]) {
	case "s", "sec", "secs", "second", "seconds":
		unit = time.Second
	case "m", "min", "mins", "minute", "minutes":
		unit = time.Minute
	case "h", "hr", "hrs", "hour", "hours":
		unit = time.Hour
	default:
		return 0
	}
	if n > int(maxHint/unit) {
		return maxHint
	}
	return capHint(time.Duration(n) * unit)
}

func capHint(d time.Duration) time.Duration {
	if d > maxHint {
		return maxHint
	}
	return d
}

// readInt reads up to 6 decimal digits at b[i:].
func readInt(b []byte, i int) (int, int) {
	v, j := 0, i
	for j < len(b) && j-i < 6 && isDigit(b[j]) {
		v = v*10 + int(b[j]-'0')
		j++
	}
	if j < len(b) && isDigit(b[j]) {
		return 0, i // too long to be a delay
	}
	return v, j
}
