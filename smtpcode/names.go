package smtpcode

import (
	"fmt"
	"strconv"
	"strings"
)

var categoryNames = [...]string{
	Other:          "other",
	Congestion:     "congestion",
	RateLimit:      "rate_limit",
	Greylist:       "greylist",
	MailboxFull:    "mailbox_full",
	UnknownUser:    "unknown_user",
	UnknownDomain:  "unknown_domain",
	RelayDenied:    "relay_denied",
	Policy:         "policy",
	Reputation:     "reputation",
	Spam:           "spam",
	Authentication: "authentication",
	TLS:            "tls",
	MessageSize:    "message_size",
	Syntax:         "syntax",
	Credentials:    "credentials",
	System:         "system",
	Network:        "network",
}

// String returns the category's name as logs and replies.tsv spell it:
// "congestion", "rate_limit", "greylist", ...
func (c Category) String() string {
	if int(c) < len(categoryNames) {
		return categoryNames[c]
	}
	return "Category(" + strconv.Itoa(int(c)) + ")"
}

// MarshalText implements encoding.TextMarshaler with String's names.
func (c Category) MarshalText() ([]byte, error) {
	if int(c) >= len(categoryNames) {
		return nil, fmt.Errorf("smtpcode: invalid category %d", c)
	}
	return []byte(categoryNames[c]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; see ParseCategory.
func (c *Category) UnmarshalText(b []byte) error {
	v, err := ParseCategory(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ParseCategory returns the category String names, ignoring case.
func ParseCategory(s string) (Category, error) {
	for i, n := range categoryNames {
		if strings.EqualFold(s, n) {
			return Category(i), nil
		}
	}
	return Other, fmt.Errorf("smtpcode: unknown category %q", s)
}

var scopeNames = [...]string{
	ScopeUnknown:    "unknown",
	ScopeConnection: "connection",
	ScopeSession:    "session",
	ScopeRecipient:  "recipient",
	ScopeMessage:    "message",
}

// String returns "unknown", "connection", "session", "recipient" or "message".
func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return "Scope(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements encoding.TextMarshaler with String's names.
func (s Scope) MarshalText() ([]byte, error) {
	if int(s) >= len(scopeNames) {
		return nil, fmt.Errorf("smtpcode: invalid scope %d", s)
	}
	return []byte(scopeNames[s]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; see ParseScope.
func (s *Scope) UnmarshalText(b []byte) error {
	v, err := ParseScope(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseScope returns the scope String names, ignoring case.
func ParseScope(s string) (Scope, error) {
	for i, n := range scopeNames {
		if strings.EqualFold(s, n) {
			return Scope(i), nil
		}
	}
	return ScopeUnknown, fmt.Errorf("smtpcode: unknown scope %q", s)
}

// String returns the reply on one line: "421 4.4.5 Server busy", the
// text's line breaks turned into spaces; codes that are absent are left out.
func (r Reply) String() string {
	var b strings.Builder
	b.Grow(len(r.Text) + 12)
	if r.Code != 0 {
		b.WriteString(strconv.Itoa(r.Code))
	}
	if !r.Enhanced.IsZero() {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.Enhanced.String())
	}
	if r.Text != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.ReplaceAll(r.Text, "\n", " "))
	}
	return b.String()
}

// Temporary reports whether the basic code (or, without one, the enhanced
// class) is 4xx, as RFC 5321 reads it; Classify knows the exceptions.
func (r Reply) Temporary() bool {
	return r.class() == 4
}

// class is the reply's class: the basic code's first digit, or the
// enhanced class when there is no basic code; 0 when neither.
func (r Reply) class() int {
	if r.Code >= 100 && r.Code < 1000 {
		return r.Code / 100
	}
	return r.Enhanced.Class
}

// Name returns the IANA registry name of the code: the specific entry
// (4.4.5 → "Mail system congestion"), else the subject's entry (4.7.650 →
// "Security or Policy Status"), else the class's entry; "" when the code is
// absent or its class is not 2, 4 or 5.
func (e EnhancedCode) Name() string {
	if e.IsZero() {
		return ""
	}
	if n, ok := registryDetail[[2]int{e.Subject, e.Detail}]; ok && validClass(e.Class) {
		return n
	}
	if e.Subject >= 0 && e.Subject < len(registrySubject) && registrySubject[e.Subject] != "" && validClass(e.Class) {
		return registrySubject[e.Subject]
	}
	if validClass(e.Class) {
		return registryClass[e.Class]
	}
	return ""
}

func validClass(c int) bool { return c == 2 || c == 4 || c == 5 }

var (
	registryDetail  = map[[2]int]string{}
	registrySubject [8]string
	registryClass   [6]string
)

func init() {
	for _, r := range registry {
		parts := strings.Split(r.code, ".")
		switch {
		case parts[1] == "X":
			c, _ := strconv.Atoi(parts[0])
			registryClass[c] = r.name
		case parts[2] == "X":
			s, _ := strconv.Atoi(parts[1])
			registrySubject[s] = r.name
		default:
			s, _ := strconv.Atoi(parts[1])
			d, _ := strconv.Atoi(parts[2])
			registryDetail[[2]int{s, d}] = r.name
		}
	}
}
