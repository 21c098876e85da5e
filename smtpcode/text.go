package smtpcode

import (
	"bytes"
	"time"
)

// matcher holds a reply's text lower-cased with white space collapsed,
// built once per Classify and only when a rule needs it.
type matcher struct {
	text  string
	norm  []byte
	built bool
	buf   [512]byte
}

func (m *matcher) normalized() []byte {
	if !m.built {
		m.norm = normalize(m.buf[:0], m.text)
		m.built = true
	}
	return m.norm
}

// normalize appends s to dst lower-cased (ASCII) with every run of white
// space turned into one space and leading/trailing space dropped.
func normalize(dst []byte, s string) []byte {
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSpace(c) {
			space = len(dst) > 0
			continue
		}
		if space {
			dst = append(dst, ' ')
			space = false
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

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

// retryHint returns the first delay the text asks for, or 0.
func (m *matcher) retryHint() time.Duration {
	if !hasDigit(m.text) {
		return 0
	}
	t := m.normalized()
	for _, tr := range hintTriggers {
		off := 0
		for off < len(t) {
			i := bytes.Index(t[off:], tr)
			if i < 0 {
				break
			}
			at := off + i + len(tr)
			if d := parseDelay(t[at:]); d > 0 {
				return d
			}
			off = at
		}
	}
	return 0
}

func hasDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			return true
		}
	}
	return false
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
