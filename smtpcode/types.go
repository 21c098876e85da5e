package smtpcode

import (
	"errors"
	"strconv"
	"time"
)

// ErrMalformed is wrapped by every error Parse returns for input that holds
// no SMTP reply: empty text, or text with neither a basic nor an enhanced code.
var ErrMalformed = errors.New("smtpcode: malformed reply")

// EnhancedCode is an RFC 3463 enhanced status code, class.subject.detail
// (4.4.5). The zero value means the reply carried none.
type EnhancedCode struct {
	Class, Subject, Detail int
}

// IsZero reports whether the code is absent.
func (e EnhancedCode) IsZero() bool { return e == EnhancedCode{} }

// String returns the dotted form ("4.4.5"), or "" when the code is absent.
func (e EnhancedCode) String() string {
	if e.IsZero() {
		return ""
	}
	return strconv.Itoa(e.Class) + "." + strconv.Itoa(e.Subject) + "." + strconv.Itoa(e.Detail)
}

// Reply is one SMTP reply: the basic code of its final line (0 when the
// text had none), the first enhanced code found (zero when none) and the
// human text without codes, one line per reply line joined with "\n".
type Reply struct {
	Code     int
	Enhanced EnhancedCode
	Text     string
}

// Category says what kind of trouble (or success) a reply reports.
type Category uint8

// The categories, as mail operators name them.
const (
	Other          Category = iota // nothing more specific is known
	Congestion                     // the receiver is overloaded or limits concurrent connections (421 4.4.5)
	RateLimit                      // the sender exceeds a per-sender volume, connection or quota limit (4.7.28, 4.5.3)
	Greylist                       // a deliberate first-attempt deferral
	MailboxFull                    // the recipient's mailbox is over quota
	UnknownUser                    // the mailbox does not exist, is disabled or moved
	UnknownDomain                  // the recipient domain does not exist or has no mail server
	RelayDenied                    // the receiver will not relay for this sender
	Policy                         // local policy: reverse DNS, content rules, address policy
	Reputation                     // blocklists, sender/IP reputation, complaint deferrals
	Spam                           // content or virus filters
	Authentication                 // SPF, DKIM, DMARC
	TLS                            // TLS required or failed
	MessageSize                    // the message or an attachment is too large
	Syntax                         // a malformed command, address or message
	Credentials                    // SMTP AUTH failed or required
	System                         // a fault on the receiver's side
	Network                        // the connection failed: refused, reset, timed out, EOF
)

// Scope says what a reply concerns, and so what a sender should slow down
// or give up on.
type Scope uint8

const (
	// ScopeUnknown: the reply does not say.
	ScopeUnknown Scope = iota
	// ScopeConnection: the connection or the sending IP as a whole (421, 4.4.5):
	// reduce concurrency to that site.
	ScopeConnection
	// ScopeSession: the session or envelope sender (MAIL FROM, AUTH, the sender's domain).
	ScopeSession
	// ScopeRecipient: one recipient only (450 4.2.1, 550 5.1.1).
	ScopeRecipient
	// ScopeMessage: this message's content or size.
	ScopeMessage
)

// Classification is what a reply means for delivery.
type Classification struct {
	// Transient is true when a later attempt may succeed (4xx, with the
	// documented exceptions); false for permanent failures and successes.
	Transient bool
	Category  Category
	Scope     Scope
	// Rule names the rule that decided, for logs ("gmail-4.7.28", "rfc3463-x.4.5").
	Rule string
	// RetryAfter is the earliest retry the server's text or the deciding
	// provider rule suggests ("try again in 92 seconds"); 0 when none.
	RetryAfter time.Duration
}
