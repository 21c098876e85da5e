package smtpcode

import (
	"fmt"
	"math/bits"
	"strings"
)

// segment is one reply line, or one piece of a reply that a bounce
// flattened into a single line ("550-5.7.1 a 550 5.7.1 b").
type segment struct {
	code     int
	enhanced EnhancedCode
	text     string
}

// maxQuote bounds how much of bad input an error message repeats.
const maxQuote = 64

// Parse reads one SMTP reply as it came off the wire, as a DSN's
// Diagnostic-Code carries it, or as a bounce quoted it.
//
// It accepts single and multi-line replies (CRLF or LF), the enhanced code
// on every line, on the first line only or on the last line only, an
// optional "smtp;" prefix (or go-smtp's "SMTP error 550:" and Exchange's
// "#550"), extra spaces, a reply flattened into one line
// ("550-5.7.1 ... 550 5.7.1 ..."), a repeated code ("550 550-5.1.1 ..."),
// and lines of another reply before the final one (a greeting): those lines
// are dropped, because the reply is the run of lines that carries the final
// line's code. Text before the first code (a wrapper such as Postfix's
// "server refused to talk to me:") is kept.
//
// Code is the basic code of the final line, or 0 when no line has one.
// Enhanced is the first enhanced code at the start of a kept line, or else
// the first valid one anywhere in the kept text (class 2, 4 or 5, subject
// 0-7); zero when there is none. Text holds the kept lines without their
// codes, joined with "\n".
//
// Input with neither a basic nor an enhanced code returns an error that
// wraps ErrMalformed, together with a Reply holding whatever text there was.
// Parse never panics.
func Parse(raw string) (Reply, error) {
	s := trimSpace(raw)
	s = trimDSNPrefix(s)
	if s == "" {
		return Reply{}, fmt.Errorf("%w: empty reply", ErrMalformed)
	}

	var store [8]segment
	segs := store[:0]
	lastCode := 0
	for s != "" {
		var line string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			line, s = s, ""
		}
		line = trimSpace(line)
		if line == "" {
			continue
		}
		segs, lastCode = splitLine(segs, line, lastCode)
	}

	final := lastCode
	var r Reply
	r.Code = final
	kept := 0
	var text string
	for i := range segs {
		sg := &segs[i]
		if sg.code != 0 && sg.code != final {
			continue
		}
		if r.Enhanced.IsZero() && !sg.enhanced.IsZero() {
			r.Enhanced = sg.enhanced
		}
		if sg.text == "" {
			continue
		}
		kept++
		if kept == 1 {
			text = sg.text
		}
	}
	if kept > 1 {
		var b strings.Builder
		n := 0
		for i := range segs {
			if sg := &segs[i]; (sg.code == 0 || sg.code == final) && sg.text != "" {
				n += len(sg.text) + 1
			}
		}
		b.Grow(n)
		for i := range segs {
			sg := &segs[i]
			if (sg.code != 0 && sg.code != final) || sg.text == "" {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(sg.text)
		}
		text = b.String()
	}
	r.Text = text
	if r.Enhanced.IsZero() {
		r.Enhanced = findEnhanced(text)
	}
	if r.Code == 0 && r.Enhanced.IsZero() {
		return Reply{Text: text}, fmt.Errorf("%w: no reply code in %q", ErrMalformed, quote(raw))
	}
	return r, nil
}

// MustParse is like Parse but panics when raw holds no reply. It is meant
// for tests and for replies written in source code, never for input.
func MustParse(raw string) Reply {
	r, err := Parse(raw)
	if err != nil {
		panic(err)
	}
	return r
}

func quote(s string) string {
	if len(s) > maxQuote {
		return s[:maxQuote] + "..."
	}
	return s
}

// splitLine appends the segments of one trimmed, non-empty line.
func splitLine(segs []segment, line string, lastCode int) ([]segment, int) {
	cur := segment{}
	rest := line
	if c, n := lineCode(line); n > 0 {
		cur.code = c
		lastCode = c
		rest = line[n:]
	}
	// Scan for codes of flattened lines inside the text.
	start := 0
	for i := nextCodeStart(rest, 0); i >= 0; i = nextCodeStart(rest, i+1) {
		c, n, ok := midCode(rest, i+1, lastCode)
		if !ok {
			continue
		}
		cur.text = rest[start:i]
		segs = appendSegment(segs, cur)
		cur = segment{code: c}
		lastCode = c
		start = i + 1 + n
		i = start - 1
	}
	cur.text = rest[start:]
	segs = appendSegment(segs, cur)
	return segs, lastCode
}

// nextCodeStart returns the first i >= from with a space at s[i] and a
// digit 2 to 5 at s[i+1], where a flattened line's code may start, or -1.
// It tests eight positions at a time: this is the only pass of Parse over
// the whole text, and most text has a space every few bytes.
func nextCodeStart(s string, from int) int {
	i := from
	for ; i+9 <= len(s); i += 8 {
		b := s[i : i+9] // one bounds check for both loads
		if m := spaceBytes(load64(b, 0)) & codeDigitBytes(load64(b, 1)); m != 0 {
			if j := i + bits.TrailingZeros64(m)/8; j+4 <= len(s) {
				return j
			}
			return -1 // too near the end to hold a code
		}
	}
	for ; i+4 <= len(s); i++ {
		if s[i] == ' ' && s[i+1] >= '2' && s[i+1] <= '5' {
			return i
		}
	}
	return -1
}

// appendSegment cleans a segment's text (spaces, a repeated basic code, the
// leading enhanced code) and appends it.
func appendSegment(segs []segment, sg segment) []segment {
	t := trimSpace(sg.text)
	if sg.code != 0 {
		// "550 550-5.1.1 ...": a repeated code.
		if c, n := lineCode(t); n > 0 && c == sg.code {
			t = trimSpace(t[n:])
		}
	}
	if e, n := leadingEnhanced(t); n > 0 {
		sg.enhanced = e
		t = trimSpace(t[n:])
		// "550 5.7.1 550 User Unknown": the code repeated after it.
		if c, n := lineCode(t); n > 0 && c == sg.code {
			t = trimSpace(t[n:])
		}
	}
	sg.text = t
	return append(segs, sg)
}

// lineCode reads a basic code at the start of s: three digits forming a
// valid reply code, followed by a space, a hyphen, a colon or the end. n is how many
// bytes it used, separator included; 0 when there is no code.
func lineCode(s string) (code, n int) {
	if len(s) < 3 || !validBasic(s[0], s[1], s[2]) {
		return 0, 0
	}
	code = int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
	if len(s) == 3 {
		return code, 3
	}
	if s[3] == ' ' || s[3] == '-' || s[3] == ':' {
		return code, 4
	}
	return 0, 0
}

// midCode decides whether a code at s[i:] (just after a space) starts a
// flattened line: "550-..." (hyphen, then not a digit unless an enhanced
// code: "call 555-1234" is text), "550 5.2.1 ...", the reply's own code
// repeated after punctuation ("allowed - 554 Message"), or, before any
// code, one after a colon ("talk to me: 421 Service ..."). After a 4xx or
// 5xx code only that same code starts a line. n is the length of code and
// separator.
func midCode(s string, i, lastCode int) (code, n int, ok bool) {
	if i+3 > len(s) || !validBasic(s[i], s[i+1], s[i+2]) {
		return 0, 0, false
	}
	code = int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
	if i+3 == len(s) {
		return 0, 0, false
	}
	// A different code inside a failure line is a quoted reply
	// ("Error: 535 5.7.3 ...", "<421 4.4.2 timed out>"), not a new line;
	// only a greeting or wrapper text comes before the real reply.
	if lastCode >= 400 && code != lastCode {
		return 0, 0, false
	}
	sep := s[i+3]
	after := s[i+4:]
	switch sep {
	case '-':
		if after == "" {
			return 0, 0, false
		}
		if isDigit(after[0]) {
			if _, n := leadingEnhanced(after); n == 0 {
				return 0, 0, false
			}
		}
		return code, 4, true
	case ' ':
		// A few spaces may precede the enhanced code; bounded so that a
		// long run of spaces costs linear time.
		k := 0
		for k < len(after) && k < 8 && after[k] == ' ' {
			k++
		}
		if _, n := leadingEnhanced(after[k:]); n > 0 {
			return code, 4, true
		}
		if i >= 2 {
			p := s[i-2]
			if code == lastCode && p != ' ' && !isAlnum(p) {
				return code, 4, true
			}
			if lastCode == 0 && p == ':' {
				return code, 4, true
			}
		}
	}
	return 0, 0, false
}

func validBasic(a, b, c byte) bool {
	return a >= '2' && a <= '5' && b >= '0' && b <= '5' && isDigit(c)
}

// leadingEnhanced reads an enhanced code at the very start of s, followed
// by the end, a space or a character that cannot continue it. n includes
// no separator.
func leadingEnhanced(s string) (EnhancedCode, int) {
	e, n := scanEnhanced(s, 0)
	return e, n
}

// findEnhanced returns the first valid enhanced code anywhere in s that
// stands alone (not part of an IP address, a version or a longer number).
func findEnhanced(s string) EnhancedCode {
	for i := 0; i+5 <= len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && (isAlnum(s[i-1]) || s[i-1] == '.') {
			continue
		}
		if e, n := scanEnhanced(s, i); n > 0 {
			return e
		}
	}
	return EnhancedCode{}
}

// scanEnhanced reads class.subject.detail at s[i:]: class 2, 4 or 5,
// subject 0-7 (one to three digits), detail one to three digits. The code
// must not be followed by a letter, a digit, or a dot and a digit.
func scanEnhanced(s string, i int) (EnhancedCode, int) {
	start := i
	if i+5 > len(s) {
		return EnhancedCode{}, 0
	}
	class := s[i]
	if (class != '2' && class != '4' && class != '5') || s[i+1] != '.' {
		return EnhancedCode{}, 0
	}
	i += 2
	subject, j := readNumber(s, i)
	if j == i || j-i > 3 || subject > 7 || j >= len(s) || s[j] != '.' {
		return EnhancedCode{}, 0
	}
	i = j + 1
	detail, j := readNumber(s, i)
	if j == i || j-i > 3 {
		return EnhancedCode{}, 0
	}
	if j < len(s) {
		next := s[j]
		if isAlnum(next) || (next == '.' && j+1 < len(s) && isDigit(s[j+1])) {
			return EnhancedCode{}, 0
		}
	}
	return EnhancedCode{Class: int(class - '0'), Subject: subject, Detail: detail}, j - start
}

// readNumber reads up to four digits (enough to reject a fourth) at s[i:].
func readNumber(s string, i int) (int, int) {
	v := 0
	j := i
	for j < len(s) && j-i < 4 && isDigit(s[j]) {
		v = v*10 + int(s[j]-'0')
		j++
	}
	return v, j
}

// trimDSNPrefix removes what bounces and logs put before a reply: a DSN
// diagnostic type ("smtp;", "SMTP; "), go-smtp's "SMTP error " (its
// SMTPError.Error form, "SMTP error 550: ..."), and the '#' of old
// Exchange reports ("#550 5.1.1 ... ##").
func trimDSNPrefix(s string) string {
	if len(s) >= 5 && strings.EqualFold(s[:4], "smtp") {
		t := trimSpace(s[4:])
		if t != "" && t[0] == ';' {
			return trimSpace(t[1:])
		}
		if len(t) > 6 && strings.EqualFold(t[:6], "error ") && isDigit(t[6]) {
			return t[6:]
		}
	}
	for s != "" && s[0] == '#' {
		s = s[1:]
	}
	return s
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// trimSpace trims ASCII white space only; unlike strings.TrimSpace it does
// not decode UTF-8, which keeps Parse cheap and byte-exact.
func trimSpace(s string) string {
	for s != "" && isSpace(s[0]) {
		s = s[1:]
	}
	for s != "" && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
