package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Every error Send returns for bad input wraps one of
// these (test with errors.Is); nothing has been sent when they are returned.
var (
	// ErrInvalidAddress: an envelope address breaks RFC 5321 syntax or
	// lengths, or carries CR, LF, NUL or angle brackets.
	ErrInvalidAddress = errors.New("deliver: invalid address")
	// ErrNoRecipients: the message has no recipient.
	ErrNoRecipients = errors.New("deliver: no recipients")
	// ErrInvalidMessage: the message data cannot be sent as it is (empty,
	// NUL bytes, unreadable reader, both Data and Body set).
	ErrInvalidMessage = errors.New("deliver: invalid message")
	// ErrMessageTooLarge: the data exceeds Config.MaxMessageBytes.
	ErrMessageTooLarge = errors.New("deliver: message too large")
	// ErrClosed: the Sender was closed.
	ErrClosed = errors.New("deliver: sender closed")
)

// RFC 5321 4.5.3.1 size limits, in octets.
const (
	MaxLocalPartLen = 64  // 4.5.3.1.1
	MaxDomainLen    = 255 // 4.5.3.1.2
	MaxPathLen      = 256 // 4.5.3.1.3, including the angle brackets
)

// AddressError says which envelope address is invalid and why. It wraps
// ErrInvalidAddress.
type AddressError struct {
	Field   string // "From" or "To[i]"
	Address string
	Reason  string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("deliver: invalid address in %s %q: %s", e.Field, e.Address, e.Reason)
}

// Unwrap returns ErrInvalidAddress.
func (e *AddressError) Unwrap() error { return ErrInvalidAddress }

// Message is one message to deliver: an envelope and RFC 5322 data.
type Message struct {
	// From is the envelope sender (MAIL FROM reverse-path), without angle
	// brackets. "" sends the null reverse-path <> used by bounces.
	From string
	// To lists the envelope recipients (RCPT TO forward-paths), without
	// angle brackets. Send returns one Result per entry, in this order.
	To []string
	// Data is the message (headers, blank line, body). Line endings may be
	// LF or CRLF: every bare CR or LF is sent as CRLF, so that no receiver
	// can see a different end of data than we do (SMTP smuggling).
	// Dot-stuffing is done on the wire; do not stuff Data yourself. Data
	// is not copied: leave it unchanged until Send returns.
	Data []byte
	// Body is an alternative to Data: it is read once, fully, before any
	// connection is made (the data may go to several receivers and be
	// retried). Set Data or Body, not both.
	Body io.Reader
	// Keys are extra governor keys this message counts against, such as
	// "mailbox:alice@example.org" or "tenant:acme". Each message takes one
	// token (rate, quota) on each key; see the package doc. It is given
	// back when the message is not sent (every recipient Deferred, none
	// PossiblyDelivered), so that its retry does not count twice.
	Keys []string
	// SourceIP is the local address connections for this message are
	// dialled from; the zero value uses Config.SourceIP.
	SourceIP netip.Addr
	// Attempt counts the earlier attempts of this message by the caller's
	// queue (0 for the first) and FirstAttempt is when the first was
	// made (zero: now). They feed the backoff policy's retry-at and maximum age.
	Attempt      int
	FirstAttempt time.Time
}

// prepared is a validated message ready for the wire.
type prepared struct {
	from      string
	rcpts     []rcpt // unique recipients
	index     []int  // Message.To[i] → rcpts index
	data      []byte // normalized: CRLF line endings
	smtputf8  bool
	keys      []string
	sourceIP  netip.Addr
	attempt   int
	firstTime time.Time

	// Backing arrays for the usual single recipient: no allocations
	// beside p itself.
	rcpt1  [1]rcpt
	index1 [1]int
}

type rcpt struct {
	addr   string // as given
	domain string // lower-cased, ASCII (punycode) form used for routing
}

// Validate checks the envelope addresses of m without sending anything.
// It returns nil or an error wrapping ErrInvalidAddress or ErrNoRecipients.
func (m *Message) Validate() error {
	if err := ValidateAddress(m.From, true); err != nil {
		return &AddressError{Field: "From", Address: m.From, Reason: err.Error()}
	}
	if len(m.To) == 0 {
		return ErrNoRecipients
	}
	for i, to := range m.To {
		if err := ValidateAddress(to, false); err != nil {
			return &AddressError{Field: fmt.Sprintf("To[%d]", i), Address: to, Reason: err.Error()}
		}
	}
	return nil
}

// prepare validates m and normalizes its data. maxBytes <= 0 means no limit.
func (m *Message) prepare(maxBytes int64) (*prepared, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.Data != nil && m.Body != nil {
		return nil, fmt.Errorf("%w: both Data and Body are set", ErrInvalidMessage)
	}
	raw := m.Data
	if m.Body != nil {
		r := m.Body
		if maxBytes > 0 {
			r = io.LimitReader(r, maxBytes+1)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("%w: reading Body: %w", ErrInvalidMessage, err)
		}
		raw = b
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty data", ErrInvalidMessage)
	}
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		return nil, fmt.Errorf("%w: NUL byte at offset %d", ErrInvalidMessage, i)
	}
	data := NormalizeCRLF(raw)
	if maxBytes > 0 && int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(data), maxBytes)
	}
	p := &prepared{
		from:      m.From,
		data:      data,
		keys:      m.Keys,
		sourceIP:  m.SourceIP,
		attempt:   m.Attempt,
		firstTime: m.FirstAttempt,
		smtputf8:  !isASCII(m.From),
	}
	if len(m.To) == 1 {
		p.index, p.rcpts = p.index1[:], p.rcpt1[:0]
	} else {
		p.index = make([]int, len(m.To))
	}
	var seen map[string]int
	if len(m.To) > 1 {
		seen = make(map[string]int, len(m.To))
	}
	for i, to := range m.To {
		if j, ok := seen[to]; ok {
			p.index[i] = j
			continue
		}
		if !isASCII(to) {
			p.smtputf8 = true
		}
		_, dom := splitAddress(to)
		if seen != nil {
			seen[to] = len(p.rcpts)
		}
		p.index[i] = len(p.rcpts)
		p.rcpts = append(p.rcpts, rcpt{addr: to, domain: routingDomain(dom)})
	}
	return p, nil
}

// NeedsSMTPUTF8 reports whether the envelope needs the SMTPUTF8 extension
// (RFC 6531): some address holds non-ASCII characters.
func (m *Message) NeedsSMTPUTF8() bool {
	if !isASCII(m.From) {
		return true
	}
	for _, to := range m.To {
		if !isASCII(to) {
			return true
		}
	}
	return false
}

var crlf = []byte("\r\n")

// NormalizeCRLF returns data with every bare CR and bare LF replaced by
// CRLF. Receivers disagree on what a bare LF or CR ends (the root of SMTP
// smuggling, CVE-2023-51764/51765/51766); after normalization only CRLF
// ends a line. It returns data itself when nothing needs to change.
func NormalizeCRLF(data []byte) []byte {
	// Without a bare CR or LF every CR starts a CRLF and every LF ends
	// one: the three counts agree (bytes.Count is vectorized).
	if n := bytes.Count(data, crlf); n == bytes.Count(data, crlf[:1]) && n == bytes.Count(data, crlf[1:]) {
		return data
	}
	out := make([]byte, 0, len(data)+len(data)/32+2)
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// ValidateAddress checks one envelope address (without angle brackets)
// against RFC 5321 4.1.2 (Mailbox = Local-part "@" (Domain /
// address-literal)), RFC 6531 (UTF-8 allowed in the local part and domain)
// and the 4.5.3.1 lengths. allowNull accepts "" (the null reverse-path).
// The returned error says why; it does not wrap ErrInvalidAddress (Send's
// errors do, through AddressError).
func ValidateAddress(addr string, allowNull bool) error {
	if addr == "" {
		if allowNull {
			return nil
		}
		return errors.New("empty address")
	}
	if !utf8.ValidString(addr) {
		return errors.New("not valid UTF-8")
	}
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c == '\r' || c == '\n':
			return errors.New("contains CR or LF")
		case c == 0:
			return errors.New("contains NUL")
		case c == '<' || c == '>':
			return errors.New("contains an angle bracket (give the bare address)")
		case c < 0x20 || c == 0x7f:
			return errors.New("contains a control character")
		}
	}
	if len(addr)+2 > MaxPathLen {
		return fmt.Errorf("path is %d octets, limit %d", len(addr)+2, MaxPathLen)
	}
	local, domain := splitAddress(addr)
	if local == "" && domain == "" {
		return errors.New("missing @domain")
	}
	if err := validateLocalPart(local); err != nil {
		return err
	}
	return validateDomain(domain)
}

// splitAddress splits at the last '@' (a quoted local part may hold '@').
func splitAddress(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "", ""
	}
	return addr[:i], addr[i+1:]
}

func validateLocalPart(local string) error {
	if local == "" {
		return errors.New("empty local part")
	}
	if len(local) > MaxLocalPartLen {
		return fmt.Errorf("local part is %d octets, limit %d", len(local), MaxLocalPartLen)
	}
	if local[0] == '"' {
		// Quoted-string = DQUOTE *QcontentSMTP DQUOTE
		if len(local) < 2 || local[len(local)-1] != '"' {
			return errors.New("unterminated quoted local part")
		}
		in := local[1 : len(local)-1]
		for i := 0; i < len(in); i++ {
			c := in[i]
			switch {
			case c == '\\':
				// quoted-pairSMTP = %d92 %d32-126
				if i+1 >= len(in) || in[i+1] < 32 || in[i+1] > 126 {
					return errors.New("bad quoted pair in local part")
				}
				i++
			case c == '"':
				return errors.New("unescaped quote in local part")
			case c >= 32 && c <= 126, c >= 0x80:
				// qtextSMTP (%d32-33 / %d35-91 / %d93-126) or UTF-8 (RFC 6531)
			default:
				return errors.New("bad character in quoted local part")
			}
		}
		return nil
	}
	// Dot-string = Atom *("." Atom)
	for rest := local; ; {
		atom, after, more := strings.Cut(rest, ".")
		rest = after
		if atom == "" {
			return errors.New("empty atom in local part (leading, trailing or double dot)")
		}
		for i := 0; i < len(atom); i++ {
			if c := atom[i]; c < 0x80 && !isAtext(c) {
				return fmt.Errorf("character %q not allowed in local part", c)
			}
		}
		if !more {
			return nil
		}
	}
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func validateDomain(domain string) error {
	if domain == "" {
		return errors.New("empty domain")
	}
	if len(domain) > MaxDomainLen {
		return fmt.Errorf("domain is %d octets, limit %d", len(domain), MaxDomainLen)
	}
	if domain[0] == '[' {
		// address-literal: IPv4 or "IPv6:" address, or General-address-literal.
		if domain[len(domain)-1] != ']' {
			return errors.New("unterminated address literal")
		}
		lit := domain[1 : len(domain)-1]
		if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
			a, err := netip.ParseAddr(v6)
			if err != nil || !a.Is6() {
				return errors.New("bad IPv6 address literal")
			}
			return nil
		}
		a, err := netip.ParseAddr(lit)
		if err != nil || !a.Is4() {
			return errors.New("bad IPv4 address literal")
		}
		return nil
	}
	name := domain
	if ascii := routingDomain(name); len(ascii) > MaxDomainLen {
		return fmt.Errorf("domain is %d octets in ASCII form, limit %d", len(ascii), MaxDomainLen)
	}
	for rest, more := name, true; more; {
		var label string
		label, rest, more = strings.Cut(rest, ".")
		if label == "" {
			return errors.New("empty label in domain")
		}
		if !isASCII(label) {
			// U-label (RFC 6531): letters of any script, checked only for
			// length in its A-label form and for ASCII punctuation.
			if len(punycodeLabel(label)) > 63 {
				return errors.New("domain label longer than 63 octets")
			}
			for i := 0; i < len(label); i++ {
				if c := label[i]; c < 0x80 && !isLetDig(c) && c != '-' {
					return fmt.Errorf("character %q not allowed in domain", c)
				}
			}
			continue
		}
		if len(label) > 63 {
			return errors.New("domain label longer than 63 octets")
		}
		// sub-domain = Let-dig [Ldh-str]
		if !isLetDig(label[0]) || !isLetDig(label[len(label)-1]) {
			return fmt.Errorf("domain label %q must start and end with a letter or digit", label)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLetDig(c) && c != '-' {
				return fmt.Errorf("character %q not allowed in domain", c)
			}
		}
	}
	return nil
}

func isLetDig(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// routingDomain returns the lower-case ASCII form of a domain for DNS and
// routing: U-labels become A-labels ("xn--..."). It does no Unicode
// normalization (IDNA2008 mapping); give domains in their canonical form.
func routingDomain(domain string) string {
	domain = strings.TrimSuffix(domain, ".")
	if isASCII(domain) {
		return strings.ToLower(domain)
	}
	labels := strings.Split(domain, ".")
	for i, l := range labels {
		labels[i] = punycodeLabel(strings.ToLower(l))
	}
	return strings.Join(labels, ".")
}

// punycodeLabel encodes one label as an A-label (RFC 3492), or returns it
// unchanged when it is ASCII.
func punycodeLabel(label string) string {
	if isASCII(label) {
		return label
	}
	const (
		base, tmin, tmax, skew, damp = 36, 1, 26, 38, 700
		initialBias, initialN        = 72, 128
	)
	runes := []rune(label)
	var out []byte
	for _, r := range runes {
		if r < 0x80 {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	digit := func(d int) byte {
		if d < 26 {
			return byte('a' + d)
		}
		return byte('0' + d - 26)
	}
	adapt := func(delta, numPoints int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / numPoints
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	n, delta, bias := initialN, 0, initialBias
	for h < len(runes) {
		m := int(^uint32(0) >> 1)
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) == n {
				q := delta
				for k := base; ; k += base {
					t := k - bias
					if t < tmin {
						t = tmin
					} else if t > tmax {
						t = tmax
					}
					if q < t {
						break
					}
					out = append(out, digit(t+(q-t)%(base-t)))
					q = (q - t) / (base - t)
				}
				out = append(out, digit(q))
				bias = adapt(delta, h+1, h == b)
				delta = 0
				h++
			}
		}
		delta++
		n++
	}
	return "xn--" + string(out)
}
