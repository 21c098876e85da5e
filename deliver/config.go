package deliver

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/sluicemail/sluice/backoff"
	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

// TLSPolicy says when a connection must be encrypted.
type TLSPolicy uint8

const (
	// TLSOpportunistic (the default) uses STARTTLS when the receiver offers
	// it and sends in clear otherwise (RFC 3207, RFC 7435). Without a
	// Config.TLSConfig the certificate is not verified, as Postfix's "may"
	// level: encryption against passive eavesdropping, not authentication.
	TLSOpportunistic TLSPolicy = iota
	// TLSRequired sends only over TLS: a receiver that does not offer
	// STARTTLS, or whose handshake fails, gets no MAIL command (no plaintext
	// fallback, no downgrade). Without a Config.TLSConfig the certificate is
	// verified against the system roots for the MX host name.
	TLSRequired
	// TLSNone never starts TLS.
	TLSNone
)

func (p TLSPolicy) String() string {
	switch p {
	case TLSOpportunistic:
		return "opportunistic"
	case TLSRequired:
		return "required"
	case TLSNone:
		return "none"
	}
	return "TLSPolicy(?)"
}

// Timeouts bound each step of an SMTP session on the connection. A zero
// field takes its default, the RFC 5321 4.5.3.2 value where there is one.
type Timeouts struct {
	Connect   time.Duration // TCP connect; default 30 s (Postfix smtp_connect_timeout)
	Greeting  time.Duration // initial 220; default 5 min (4.5.3.2.1)
	Hello     time.Duration // EHLO, STARTTLS and the TLS handshake, AUTH, RSET, QUIT; default 5 min
	Mail      time.Duration // MAIL FROM; default 5 min (4.5.3.2.2)
	Rcpt      time.Duration // each RCPT TO; default 5 min (4.5.3.2.3)
	DataInit  time.Duration // DATA until the 354; default 2 min (4.5.3.2.4)
	DataBlock time.Duration // each write of the body and the final dot; default 3 min (4.5.3.2.5)
	DataEnd   time.Duration // the reply to the final dot; default 10 min (4.5.3.2.6)
}

// Default values of Config and Timeouts.
const (
	DefaultConnectTimeout   = 30 * time.Second
	DefaultGreetingTimeout  = 5 * time.Minute
	DefaultHelloTimeout     = 5 * time.Minute
	DefaultMailTimeout      = 5 * time.Minute
	DefaultRcptTimeout      = 5 * time.Minute
	DefaultDataInitTimeout  = 2 * time.Minute
	DefaultDataBlockTimeout = 3 * time.Minute
	DefaultDataEndTimeout   = 10 * time.Minute

	// DefaultMXCacheTTL: how long a domain's route is kept (net.Resolver
	// does not expose DNS TTLs).
	DefaultMXCacheTTL = 5 * time.Minute
	// DefaultMaxMessagesPerConn: deliveries over one connection before it
	// is closed (Exim's connection_max_messages is 500; receivers such as
	// Gmail start to defer well before on a cold IP).
	DefaultMaxMessagesPerConn = 100
	// DefaultIdleTimeout: an idle pooled connection is closed after this
	// (Postfix smtp_connection_cache_time_limit is 2 s; a little longer
	// lets a burst of Send calls share connections).
	DefaultIdleTimeout = 5 * time.Second
	// DefaultMaxConnAge: no message starts on a connection older than this
	// (Postfix smtp_connection_reuse_time_limit).
	DefaultMaxConnAge = 5 * time.Minute
	// DefaultMaxWait: how long Send waits for governor limits and for a
	// retry after a congestion reply before deferring.
	DefaultMaxWait = time.Minute
	// DefaultMaxAttempts: connection attempts per recipient domain within
	// one Send (each on another connection, or the next MX).
	DefaultMaxAttempts = 3
	// DefaultMaxMessageBytes: the largest message Send accepts.
	DefaultMaxMessageBytes = 64 << 20
)

// Config configures a Sender. The zero Config delivers through MX lookups
// with the documented defaults: opportunistic TLS, the built-in per-site
// policy (DefaultPolicy), RFC 5321 timeouts, nothing logged.
type Config struct {
	// HelloName is the name given in EHLO. "" uses os.Hostname (or
	// "localhost" when that is not a valid domain name). Receivers
	// check it against reverse DNS: set it to your sending host's FQDN.
	HelloName string

	// SourceIP is the local address to dial from when a Message names none.
	// The zero value lets the system choose.
	SourceIP netip.Addr

	// Dial opens a connection to addr (host:port) from the local address
	// source (zero: any). nil uses a net.Dialer bound to source with
	// Timeouts.Connect. Tests plug an in-memory dialer in here.
	Dial func(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error)

	// Port is the SMTP port of MX hosts. 0: 25.
	Port int

	// Routing: Smarthost if set, else Routes, else MX lookups.

	// Smarthost sends every message through one relay.
	Smarthost *Smarthost
	// Routes maps a recipient domain (or "*" for every domain) to the hosts
	// (host or host:port) to try in order, bypassing DNS.
	Routes map[string][]string
	// Resolver does MX and address lookups. nil: net.DefaultResolver.
	Resolver Resolver
	// MXCacheTTL is how long a route is cached. 0: DefaultMXCacheTTL.
	MXCacheTTL time.Duration
	// SiteKey returns the site of a domain whose mail goes to hosts; ""
	// falls back to SiteOf (the registrable domain of the best MX host).
	SiteKey func(domain string, hosts []string) string

	// SharedSites lists the sites whose MX hosts accept mail for every
	// domain of the site, so that an open connection to any of them can
	// carry mail for any of those domains (a connection to gmail.com's MX
	// carries a Google Workspace domain's mail; Google documents that its
	// MX hosts serve every Workspace domain). nil: []string{SiteGoogle};
	// an empty non-nil slice: none, connections are shared only between
	// domains that list the same host.
	SharedSites []string

	// TLS is the TLS policy; TLSConfig the configuration used for it (its
	// ServerName is set to the host dialled when empty).
	TLS       TLSPolicy
	TLSConfig *tls.Config

	// Timeouts per SMTP step; zero fields take the defaults.
	Timeouts Timeouts

	// DisablePipelining sends one command per round trip even to a
	// receiver that offers PIPELINING (RFC 2920). By default MAIL, every
	// RCPT and DATA go out in one write when it is offered: a message then
	// costs two round trips instead of three plus one per recipient.
	DisablePipelining bool

	// MaxMessagesPerConn: 0 means DefaultMaxMessagesPerConn; negative: 1
	// (no reuse).
	MaxMessagesPerConn int
	// IdleTimeout: 0 means DefaultIdleTimeout; negative: no pooling.
	IdleTimeout time.Duration
	// MaxConnAge: 0 means DefaultMaxConnAge.
	MaxConnAge time.Duration

	// Governor enforces the limits. nil: a new governor with Policy (or
	// DefaultPolicy when Policy is nil).
	Governor *governor.Governor
	// Policy is used only when Governor is nil.
	Policy *governor.Policy

	// Backoff decides retry-at for deferred recipients. nil: the defaults.
	Backoff *backoff.Policy
	// Classifier classifies replies. nil: smtpcode's default rules.
	Classifier *smtpcode.Classifier

	// MaxWait bounds how long Send waits for governor limits and, after a
	// congestion reply, for another connection; past it recipients come
	// back deferred. 0: DefaultMaxWait; negative: only ctx bounds it.
	MaxWait time.Duration
	// MaxAttempts bounds connection attempts per domain within one Send.
	// 0: DefaultMaxAttempts.
	MaxAttempts int
	// MaxMessageBytes: larger messages are refused with
	// ErrMessageTooLarge. 0: DefaultMaxMessageBytes; negative: no limit.
	MaxMessageBytes int64

	// Logger receives structured logs. nil logs nothing.
	Logger *slog.Logger
	// Hooks are called on events, for metrics. nil fields are skipped.
	Hooks Hooks
}

// Hooks are called synchronously from the goroutine doing the work; keep
// them fast and do not call the Sender from them.
type Hooks struct {
	// Attempt is called after each SMTP transaction attempt on a connection.
	Attempt func(AttemptInfo)
	// Result is called once per recipient with its final result.
	Result func(Result)
	// Wait is called after each governor wait that took time or gave up
	// (a grant at once is not reported), and after each wait for a rate
	// learned from a receiver.
	Wait func(WaitInfo)
	// Connect is called after each connection attempt.
	Connect func(ConnectInfo)
}

// AttemptInfo describes one SMTP transaction.
type AttemptInfo struct {
	Site, Host string
	SourceIP   netip.Addr
	Recipients int            // recipients in the transaction
	Accepted   int            // recipients the receiver accepted in the end (after the final dot)
	Reply      smtpcode.Reply // the last reply of the transaction (zero on a network error)
	Class      smtpcode.Classification
	Err        error
	Duration   time.Duration
}

// WaitInfo describes a governor decision.
type WaitInfo struct {
	Site     string
	Keys     []string
	Decision governor.Decision
	Err      error // non-nil when the wait gave up
}

// ConnectInfo describes one connection attempt.
type ConnectInfo struct {
	Site, Host string
	SourceIP   netip.Addr
	TLS        bool
	Reply      smtpcode.Reply // the greeting or the failing reply
	Class      smtpcode.Classification
	Err        error // nil when the connection is ready for MAIL
	Duration   time.Duration
}

func (t Timeouts) withDefaults() Timeouts {
	return Timeouts{
		Connect:   cmp.Or(t.Connect, DefaultConnectTimeout),
		Greeting:  cmp.Or(t.Greeting, DefaultGreetingTimeout),
		Hello:     cmp.Or(t.Hello, DefaultHelloTimeout),
		Mail:      cmp.Or(t.Mail, DefaultMailTimeout),
		Rcpt:      cmp.Or(t.Rcpt, DefaultRcptTimeout),
		DataInit:  cmp.Or(t.DataInit, DefaultDataInitTimeout),
		DataBlock: cmp.Or(t.DataBlock, DefaultDataBlockTimeout),
		DataEnd:   cmp.Or(t.DataEnd, DefaultDataEndTimeout),
	}
}
