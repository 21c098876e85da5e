package delivertest

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrInvalidConfig is wrapped by every error NewServer and NewPipeServer
// return for a Config they refuse.
var ErrInvalidConfig = errors.New("delivertest: invalid config")

// ErrServerClosed is returned by dialers once the server is closed.
var ErrServerClosed = errors.New("delivertest: server closed")

// Reply is an SMTP reply a receiver sends: a basic code, an optional RFC 3463
// enhanced code ("4.4.5"; empty for none, as some receivers send) and a text.
// A text with "\n" is sent as a multi-line reply. The placeholder "{client}"
// in the text is replaced by the client's identity, as receivers quote the
// sending IP.
//
// A reply with basic code 421 closes the connection once it is written
// (RFC 5321: "closing transmission channel").
type Reply struct {
	Code     int
	Enhanced string
	Text     string
}

// String renders r as it goes on the wire, on one line.
func (r Reply) String() string {
	if r.Enhanced == "" {
		return fmt.Sprintf("%d %s", r.Code, r.Text)
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

func (r Reply) isZero() bool { return r == Reply{} }

func (r Reply) or(def Reply) Reply {
	if r.isZero() {
		return def
	}
	return r
}

// validate checks a configured reply; refusal says it must be 4xx or 5xx.
func (r Reply) validate(field string, refusal bool) error {
	if r.Code < 200 || r.Code > 599 {
		return fmt.Errorf("%w: %s: basic code %d out of range 200-599", ErrInvalidConfig, field, r.Code)
	}
	if refusal && r.Code < 400 {
		return fmt.Errorf("%w: %s: code %d is not a refusal (4xx or 5xx)", ErrInvalidConfig, field, r.Code)
	}
	if strings.ContainsAny(r.Text, "\r\x00") {
		return fmt.Errorf("%w: %s: text contains CR or NUL", ErrInvalidConfig, field)
	}
	if r.Enhanced == "" {
		return nil
	}
	ec, err := parseEnhanced(r.Enhanced)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidConfig, field, err)
	}
	if ec[0] != r.Code/100 {
		return fmt.Errorf("%w: %s: enhanced code %s does not match basic code %d", ErrInvalidConfig, field, r.Enhanced, r.Code)
	}
	return nil
}

func parseEnhanced(s string) (smtp.EnhancedCode, error) {
	var ec smtp.EnhancedCode
	rest := s
	for i := range ec {
		part := rest
		if i < 2 {
			var ok bool
			part, rest, ok = strings.Cut(rest, ".")
			if !ok {
				return smtp.EnhancedCode{}, fmt.Errorf("enhanced code %q is not class.subject.detail", s)
			}
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || n > 999 || (i == 0 && n != 2 && n != 4 && n != 5) {
			return smtp.EnhancedCode{}, fmt.Errorf("enhanced code %q is not class.subject.detail", s)
		}
		ec[i] = n
	}
	return ec, nil
}

// isEnhanced is parseEnhanced without the error, for the hot path.
func isEnhanced(s string) bool {
	dots := 0
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if digits == 0 {
				return false
			}
			dots++
			digits = 0
		case c >= '0' && c <= '9':
			digits++
			if digits > 3 {
				return false
			}
		default:
			return false
		}
	}
	return dots == 2 && digits > 0 && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.'
}

// smtpError turns r into the error a go-smtp Session returns, with the
// client's identity substituted.
func (r Reply) smtpError(client string) *smtp.SMTPError {
	ec := smtp.NoEnhancedCode
	if r.Enhanced != "" {
		ec, _ = parseEnhanced(r.Enhanced) // validated by NewServer
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: ec, Message: strings.ReplaceAll(r.Text, "{client}", client)}
}

// wire renders r as a receiver such as Gmail writes it: the enhanced code on
// every line of a multi-line reply. (Replies go-smtp writes carry it on the
// last line only; both layouts exist in the wild.)
func (r Reply) wire(client string) []byte {
	lines := strings.Split(strings.ReplaceAll(r.Text, "{client}", client), "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		b.WriteString(strconv.Itoa(r.Code))
		b.WriteString(sep)
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced)
			b.WriteString(" ")
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// Rate is a token bucket: Burst tokens, one more every Every. The zero value
// (Every 0) is no cap. When the bucket is empty the receiver answers Reply;
// with Penalty > 0 it then answers Reply to everything from that client
// (connections and messages) for Penalty, as Yahoo's TSS04 deferrals do.
type Rate struct {
	Every   time.Duration
	Burst   int // 0 means 1
	Reply   Reply
	Penalty time.Duration
}

func (r Rate) enabled() bool { return r.Every > 0 }

func (r Rate) burst() int {
	if r.Burst <= 0 {
		return 1
	}
	return r.Burst
}

// Limits are the limits a receiver applies to each client separately (per
// sending IP on TCP, per identity on the in-memory listener). Zero fields are
// no limit.
type Limits struct {
	// MaxConnections caps the connections a client holds open at once. The
	// connection over the cap gets ConnectionsReply instead of the greeting,
	// then is closed (Gmail's 421 4.4.5).
	MaxConnections   int
	ConnectionsReply Reply // default DefaultConnectionsReply

	// ConnectionRate is checked when a connection opens (instead of the
	// greeting), MessageRate at each MAIL FROM. Defaults for their replies:
	// DefaultConnectionRateReply and DefaultMessageRateReply.
	ConnectionRate Rate
	MessageRate    Rate

	// MaxMessagesPerConnection: the MAIL FROM after that many accepted
	// messages on one connection gets MaxMessagesReply (default
	// DefaultMaxMessagesReply, a 421 that closes the connection).
	MaxMessagesPerConnection int
	MaxMessagesReply         Reply

	// MaxRecipients per message: the RCPT TO over it gets MaxRecipientsReply
	// (default DefaultMaxRecipientsReply, 452 4.5.3).
	MaxRecipients      int
	MaxRecipientsReply Reply
}

// Default replies, used where a Config leaves a reply zero. Their texts are
// generic; the presets carry the providers' own.
var (
	DefaultConnectionsReply    = Reply{421, "4.4.5", "Too many concurrent connections from {client}, try again later"}
	DefaultConnectionRateReply = Reply{421, "4.7.0", "Too many connections from {client}, try again later"}
	DefaultMessageRateReply    = Reply{421, "4.7.0", "Too many messages from {client}, try again later"}
	DefaultMaxMessagesReply    = Reply{421, "4.7.0", "Max messages per connection reached, closing transmission channel"}
	DefaultMaxRecipientsReply  = Reply{452, "4.5.3", "Error: too many recipients"} // Postfix smtpd
	DefaultGreylistReply       = Reply{451, "4.7.1", "Greylisting in action, please come back later"}
)

func (l Limits) validate(field string) error {
	if l.MaxConnections < 0 || l.MaxMessagesPerConnection < 0 || l.MaxRecipients < 0 {
		return fmt.Errorf("%w: %s: negative limit", ErrInvalidConfig, field)
	}
	for _, r := range []struct {
		name string
		rate Rate
	}{{"ConnectionRate", l.ConnectionRate}, {"MessageRate", l.MessageRate}} {
		if r.rate.Every < 0 || r.rate.Burst < 0 || r.rate.Penalty < 0 {
			return fmt.Errorf("%w: %s.%s: negative value", ErrInvalidConfig, field, r.name)
		}
		if !r.rate.Reply.isZero() {
			if err := r.rate.Reply.validate(field+"."+r.name+".Reply", true); err != nil {
				return err
			}
		}
	}
	for _, r := range []struct {
		name  string
		reply Reply
	}{{"ConnectionsReply", l.ConnectionsReply}, {"MaxMessagesReply", l.MaxMessagesReply}, {"MaxRecipientsReply", l.MaxRecipientsReply}} {
		if !r.reply.isZero() {
			if err := r.reply.validate(field+"."+r.name, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// Greylist refuses the first attempt of each (client, sender, recipient)
// triple at RCPT TO with Reply (default DefaultGreylistReply, 451 4.7.1), and
// keeps refusing it until Delay has passed since that first attempt. Delay 0
// disables greylisting. Postgrey's default delay is 5 minutes.
type Greylist struct {
	Delay time.Duration
	Reply Reply
}

// Latency delays the reply to each command, so that a client's throughput is
// bounded as by a real round trip. Data is the time between the final dot
// and its reply. Under testing/synctest the delays are fake time.
type Latency struct {
	Greeting, Hello, Mail, Rcpt, Data time.Duration
}

// EveryCommand returns a Latency of d for every command.
func EveryCommand(d time.Duration) Latency {
	return Latency{d, d, d, d, d}
}

// Step is the point of an SMTP session where a Fault fires.
type Step int

const (
	StepConnect Step = iota + 1 // a connection is accepted, before the greeting
	StepHello                   // EHLO/HELO received (after the greeting)
	StepMail                    // MAIL FROM received
	StepRcpt                    // RCPT TO received
	StepData                    // DATA accepted (354 sent), before the body is read
	StepBody                    // part of the body read
	StepDot                     // the whole body and final dot read, before the reply
)

var stepNames = [...]string{"", "connect", "hello", "mail", "rcpt", "data", "body", "dot"}

func (s Step) String() string {
	if s > 0 && int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "Step(" + strconv.Itoa(int(s)) + ")"
}

// Action is what a Fault does.
type Action int

const (
	// ActionReply answers the Fault's Reply (a 421 also closes). At
	// StepData, StepBody and StepDot the reply comes after the final dot:
	// SMTP has no way to refuse a body half-way but to drop the connection.
	ActionReply Action = iota + 1
	// ActionDrop closes the connection without a reply.
	ActionDrop
	// ActionHang never answers: the connection stays open, reading and
	// discarding, until the client closes it or the server is closed.
	ActionHang
	// ActionGarbage answers a line that is not an SMTP reply, then closes.
	ActionGarbage
)

var actionNames = [...]string{"", "reply", "drop", "hang", "garbage"}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Garbage is what ActionGarbage writes.
const Garbage = "\x00\x7fHTTP/1.1 400 Bad Request \xff\xfe\r\n"

// Fault scripts a misbehaviour or a reply at one Step. A fault fires when
// its filters match (Client, and Recipient at StepRcpt; empty matches any),
// skipping the first Skip matches and then firing Times times (0: every
// time). The first firing fault in Config.Faults wins. A Fault with a
// Recipient filter fires only at StepRcpt.
type Fault struct {
	Step      Step
	Action    Action
	Reply     Reply // for ActionReply
	Client    string
	Recipient string
	Skip      int
	Times     int
}

// Config describes a receiver. The zero value accepts everything.
type Config struct {
	// Addr is where NewServer listens: a loopback host:port, default
	// "127.0.0.1:0". For NewPipeServer it is the name its dialers route by,
	// any host:port unique among open pipe servers, default
	// "pipe-N.delivertest.invalid:25".
	Addr string

	// Domain is the receiver's name in its greeting and test certificate.
	// Default "mx.delivertest.invalid".
	Domain string

	// Limits apply to every client separately; Clients replaces them for
	// the identities it lists.
	Limits  Limits
	Clients map[string]Limits

	Greylist Greylist

	// Recipients scripts the reply to RCPT TO for the addresses it lists
	// (exact match): unknown user, mailbox full, 450 4.2.1... A 2xx reply
	// accepts (go-smtp answers its own 250). For a reply that changes over
	// time, use a Fault with a Recipient filter.
	Recipients map[string]Reply

	Latency Latency
	Faults  []Fault

	// StartTLS offers STARTTLS with a certificate generated at start for
	// Domain, TLSHostnames, "localhost", the loopback IPs and a pipe
	// server's host name (Server.ClientTLSConfig and CertPool trust it).
	StartTLS     bool
	TLSHostnames []string

	// NoPipelining hides PIPELINING (RFC 2920) from the EHLO reply, for a
	// receiver that takes one command per round trip. go-smtp always offers
	// it; the capability line is dropped on the wire, so a client's EHLO
	// reply and the record of it both lack it. Only the offer is hidden: a
	// client that pipelines anyway is still answered command by command, as
	// go-smtp reads ahead. It cannot be combined with StartTLS, as the EHLO
	// reply after STARTTLS is encrypted and cannot be filtered.
	NoPipelining bool

	// MaxMessageBytes is announced in EHLO SIZE and enforced (552 5.3.4);
	// 0 is unlimited. IdleTimeout closes a connection idle that long with
	// go-smtp's 421 4.4.2; 0 is never.
	MaxMessageBytes int64
	IdleTimeout     time.Duration

	// DiscardData keeps envelopes but not bodies in the record.
	DiscardData bool

	// Users, when not nil, offers AUTH PLAIN (also without TLS) checked
	// against these user names and passwords, for smarthost tests.
	Users map[string]string
}

const defaultDomain = "mx.delivertest.invalid"

func (c *Config) validate(tcp bool) error {
	if err := c.Limits.validate("Limits"); err != nil {
		return err
	}
	for id, l := range c.Clients {
		if err := l.validate("Clients[" + strconv.Quote(id) + "]"); err != nil {
			return err
		}
	}
	if c.Greylist.Delay < 0 {
		return fmt.Errorf("%w: Greylist.Delay is negative", ErrInvalidConfig)
	}
	if !c.Greylist.Reply.isZero() {
		if err := c.Greylist.Reply.validate("Greylist.Reply", true); err != nil {
			return err
		}
	}
	for rcpt, r := range c.Recipients {
		if err := r.validate("Recipients["+strconv.Quote(rcpt)+"]", false); err != nil {
			return err
		}
	}
	l := c.Latency
	if l.Greeting < 0 || l.Hello < 0 || l.Mail < 0 || l.Rcpt < 0 || l.Data < 0 {
		return fmt.Errorf("%w: negative Latency", ErrInvalidConfig)
	}
	for i, f := range c.Faults {
		field := fmt.Sprintf("Faults[%d]", i)
		if f.Step < StepConnect || f.Step > StepDot {
			return fmt.Errorf("%w: %s: unknown step %v", ErrInvalidConfig, field, f.Step)
		}
		if f.Action < ActionReply || f.Action > ActionGarbage {
			return fmt.Errorf("%w: %s: unknown action %v", ErrInvalidConfig, field, f.Action)
		}
		if f.Skip < 0 || f.Times < 0 {
			return fmt.Errorf("%w: %s: negative Skip or Times", ErrInvalidConfig, field)
		}
		if f.Recipient != "" && f.Step != StepRcpt {
			return fmt.Errorf("%w: %s: a Recipient filter needs StepRcpt", ErrInvalidConfig, field)
		}
		if f.Action == ActionReply {
			if err := f.Reply.validate(field+".Reply", true); err != nil {
				return err
			}
		}
	}
	if c.NoPipelining && c.StartTLS {
		return fmt.Errorf("%w: NoPipelining with StartTLS: the EHLO reply after STARTTLS is encrypted, so PIPELINING cannot be hidden from it", ErrInvalidConfig)
	}
	if c.MaxMessageBytes < 0 || c.IdleTimeout < 0 {
		return fmt.Errorf("%w: negative MaxMessageBytes or IdleTimeout", ErrInvalidConfig)
	}
	if strings.ContainsAny(c.Domain, " \r\n\x00") {
		return fmt.Errorf("%w: Domain %q", ErrInvalidConfig, c.Domain)
	}
	if tcp && c.Addr != "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return fmt.Errorf("%w: Addr: %v", ErrInvalidConfig, err)
		}
		// A test receiver accepts anything: keep it off real networks.
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%w: Addr %q is not a loopback IP", ErrInvalidConfig, c.Addr)
		}
	}
	if !tcp && c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("%w: Addr: %v", ErrInvalidConfig, err)
		}
	}
	return nil
}

// clone copies what a caller could still change after NewServer.
func (c Config) clone() Config {
	c.Clients = maps.Clone(c.Clients)
	c.Recipients = maps.Clone(c.Recipients)
	c.Users = maps.Clone(c.Users)
	c.Faults = slices.Clone(c.Faults)
	c.TLSHostnames = slices.Clone(c.TLSHostnames)
	return c
}

func (c *Config) limitsFor(client string) *Limits {
	if l, ok := c.Clients[client]; ok {
		return &l
	}
	return &c.Limits
}
