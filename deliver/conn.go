package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/smtpcode"
)

// outcome is what one step ended with: a reply (received, or synthesized
// locally when local is set) and/or an error, and its classification.
type outcome struct {
	reply smtpcode.Reply
	err   error
	class smtpcode.Classification
	local bool
}

func (o *outcome) hasReply() bool { return o.reply.Code != 0 || !o.reply.Enhanced.IsZero() }

// Locally synthesized replies.
var (
	// RFC 6531 3.5: a message that needs SMTPUTF8 cannot go to a server
	// without it.
	replyNoSMTPUTF8 = smtpcode.Reply{Code: 553, Enhanced: smtpcode.EnhancedCode{Class: 5, Subject: 6, Detail: 7}, Text: "Receiver does not support SMTPUTF8, required by the non-ASCII address"}
	// RFC 1870: the message is larger than the receiver's SIZE.
	replyTooBig = smtpcode.Reply{Code: 552, Enhanced: smtpcode.EnhancedCode{Class: 5, Subject: 3, Detail: 4}, Text: "Message size exceeds the receiver's fixed maximum message size"}
	// RFC 3207 / X.7.10 "Encryption needed": TLS required by our policy but
	// not available; transient, the receiver may offer it later.
	replyTLSUnavailable = smtpcode.Reply{Code: 454, Enhanced: smtpcode.EnhancedCode{Class: 4, Subject: 7, Detail: 10}, Text: "TLS is required by the sending policy but not available"}
	// AUTH over clear text refused locally.
	replyInsecureAuth = smtpcode.Reply{Code: 454, Enhanced: smtpcode.EnhancedCode{Class: 4, Subject: 7, Detail: 10}, Text: "Refusing to authenticate without TLS"}
)

// errTLSUnavailable is the error behind replyTLSUnavailable.
var errTLSUnavailable = errors.New("deliver: TLS required but not available")

// errHandshake marks a failed STARTTLS handshake.
var errHandshake = errors.New("deliver: TLS handshake failed")

// trackConn is the net.Conn go-smtp's client talks through. It replays
// bytes already read (the greeting we read ourselves) and remembers the
// last bytes written, so that a connection lost after the final dot is
// known to be "possibly delivered".
type trackConn struct {
	net.Conn
	prefix  []byte
	swallow bool
	tail    [5]byte
	ntail   int
}

func (t *trackConn) Read(b []byte) (int, error) {
	if len(t.prefix) > 0 {
		n := copy(b, t.prefix)
		t.prefix = t.prefix[n:]
		return n, nil
	}
	return t.Conn.Read(b)
}

func (t *trackConn) Write(b []byte) (int, error) {
	if t.swallow {
		// Drop the first command line (go-smtp's EHLO, answered already).
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return len(b), nil
		}
		t.swallow = false
		if i+1 == len(b) {
			return len(b), nil
		}
		n, err := t.Write(b[i+1:])
		return i + 1 + n, err
	}
	n, err := t.Conn.Write(b)
	if n >= len(t.tail) {
		copy(t.tail[:], b[n-len(t.tail):n])
	} else {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], b[:n])
	}
	t.ntail = min(t.ntail+n, len(t.tail))
	return n, err
}

// wroteFinalDot reports whether the last bytes written end the data.
func (t *trackConn) wroteFinalDot() bool {
	return t.ntail == 5 && string(t.tail[:]) == "\r\n.\r\n"
}

// session is one SMTP connection. Only one goroutine uses it at a time
// (the pool hands it out exclusively).
type session struct {
	s        *Sender
	raw      net.Conn
	track    *trackConn
	host     routeHost
	site     string
	sourceIP netip.Addr
	permit   permit
	tls      bool

	created   time.Time
	lastUsed  time.Time
	messages  int
	broken    bool // unusable: closed, 421, protocol state unknown
	exhausted bool // the receiver's messages-per-connection cap was reached

	// Pool state, guarded by pool.mu.
	idleTimer  *time.Timer
	timerArmed bool
	idleSince  time.Time
	closeOnce  sync.Once
	idleBuf    []*session // an idle list's array, kept across take and put

	// closeRaw closes raw; built once, so that each transaction's
	// context.AfterFunc does not allocate a closure. stopBase undoes its
	// registration on the Sender's base context.
	closeRaw func()
	stopBase func() bool

	// What the receiver offered in EHLO (for the transaction).
	pipelining   bool // RFC 2920, and not Config.DisablePipelining
	eightBitMIME bool
	smtputf8     bool
	sizeOffered  bool
	maxSize      int64 // SIZE's limit; 0: none

	// The transaction's own reader and buffers (transaction.go); go-smtp's
	// client is done with the connection once EHLO and AUTH are over.
	br          *bufio.Reader
	rbuf, wbuf  []byte
	readTimeout time.Duration // the read deadline last armed, and when
	readArmed   time.Time
}

// permit is what a session holds on the governor for its whole life.
type permit interface {
	Release()
	Acquired() time.Time
}

// dialSession connects to h and runs greeting, EHLO, STARTTLS and AUTH.
// On failure it returns the outcome and closes everything it opened; it
// does not release p.
//
// plain skips STARTTLS: the retry after a failed handshake under the
// opportunistic policy.
func (s *Sender) dialSession(ctx context.Context, rt *route, h routeHost, src netip.Addr, p permit, plain bool) (*session, *outcome) {
	to := s.timeouts
	start := time.Now()
	info := ConnectInfo{Site: rt.site, Host: h.name, SourceIP: src}
	report := func(ss *session, o *outcome) (*session, *outcome) {
		info.Duration = time.Since(start)
		if o != nil {
			info.Reply, info.Class, info.Err = o.reply, o.class, o.err
			if info.Err == nil {
				info.Err = fmt.Errorf("deliver: %s", o.reply.String())
			}
		} else {
			info.TLS = ss.tls
		}
		if s.cfg.Hooks.Connect != nil {
			s.cfg.Hooks.Connect(info)
		}
		if s.cfg.Logger != nil {
			s.log(ctx, "connect", "site", rt.site, "host", h.name, "source", src, "tls", info.TLS, "reply", info.Reply.String(), "err", info.Err)
		}
		return ss, o
	}

	dctx, cancel := context.WithTimeout(ctx, to.Connect)
	raw, err := s.dial(dctx, "tcp", h.addr, src)
	cancel()
	if err != nil {
		return report(nil, s.errOutcome(ctx, err))
	}
	fail := func(o *outcome) (*session, *outcome) {
		raw.Close()
		return report(nil, o)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	var conn net.Conn = raw
	isTLS := false
	tlsConfig := s.tlsConfigFor(h.name)
	if s.cfg.Smarthost != nil && s.cfg.Smarthost.ImplicitTLS {
		tc := tls.Client(raw, tlsConfig)
		raw.SetDeadline(time.Now().Add(to.Hello))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(s.errOutcome(ctx, err))
		}
		conn, isTLS = tc, true
	}

	conn.SetDeadline(time.Now().Add(to.Greeting))
	br := bufio.NewReader(conn)
	tr := textproto.NewReader(br)
	if _, _, err := tr.ReadResponse(220); err != nil {
		return fail(s.errOutcome(ctx, err))
	}

	var ehloReply string // our EHLO's reply, replayed to go-smtp when TLS did not follow
	policy := s.cfg.TLS
	if s.cfg.Smarthost != nil && s.cfg.Smarthost.Auth != nil && !s.cfg.Smarthost.AllowInsecureAuth && policy == TLSOpportunistic {
		policy = TLSRequired // credentials never go in clear
	}
	if plain && policy == TLSOpportunistic {
		policy = TLSNone
	}
	if !isTLS && policy != TLSNone {
		conn.SetDeadline(time.Now().Add(to.Hello))
		offered := false
		if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", s.helloName); err != nil {
			return fail(s.errOutcome(ctx, err))
		}
		_, msg, err := tr.ReadResponse(250)
		var te *textproto.Error
		switch {
		case err == nil:
			ehloReply = msg
			for _, line := range strings.Split(msg, "\n")[1:] {
				if kw, _, _ := strings.Cut(line, " "); strings.EqualFold(kw, "STARTTLS") {
					offered = true
				}
			}
		case errors.As(err, &te) && (te.Code == 500 || te.Code == 502):
			// No ESMTP, so no STARTTLS; go-smtp falls back to HELO below.
		default:
			return fail(s.errOutcome(ctx, err))
		}
		if offered {
			if _, err := fmt.Fprintf(conn, "STARTTLS\r\n"); err != nil {
				return fail(s.errOutcome(ctx, err))
			}
			_, _, err := tr.ReadResponse(220)
			switch {
			case err == nil:
				if br.Buffered() > 0 {
					// Bytes sent before the handshake would be read as if
					// they came over TLS (CVE-2011-0411 and kin).
					return fail(s.localPtr(replyTLSUnavailable, errors.New("deliver: receiver sent data after its STARTTLS reply (possible injection)")))
				}
				tc := tls.Client(conn, tlsConfig)
				if err := tc.HandshakeContext(ctx); err != nil {
					return fail(s.errOutcome(ctx, fmt.Errorf("%w with %s: %w", errHandshake, h.name, err)))
				}
				conn, isTLS = tc, true
				br = nil
			case errors.As(err, &te) && policy != TLSRequired:
				// STARTTLS refused (454): carry on in clear.
			default:
				if errors.As(err, &te) {
					return fail(s.localPtr(replyTLSUnavailable, fmt.Errorf("%w: STARTTLS refused: %w", errTLSUnavailable, err)))
				}
				return fail(s.errOutcome(ctx, err))
			}
		}
		if !isTLS && policy == TLSRequired {
			fmt.Fprintf(conn, "QUIT\r\n") // polite; its reply is not awaited
			return fail(s.localPtr(replyTLSUnavailable, fmt.Errorf("%w: %s does not offer STARTTLS", errTLSUnavailable, h.name)))
		}
	}

	// Hand the connection to go-smtp. Its client insists on reading a
	// greeting first: replay one, plus anything the server pipelined.
	// Without TLS after our EHLO, replay its reply too and swallow
	// go-smtp's EHLO command, so that no round trip is repeated.
	prefix := []byte("220 greeting already read\r\n")
	swallow := false
	if !isTLS && ehloReply != "" {
		lines := strings.Split(ehloReply, "\n")
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			prefix = append(prefix, "250"+sep+l+"\r\n"...)
		}
		swallow = true
	}
	if br != nil && br.Buffered() > 0 {
		extra, _ := br.Peek(br.Buffered())
		prefix = append(prefix, extra...)
	}
	track := &trackConn{Conn: conn, prefix: prefix, swallow: swallow}
	c := smtp.NewClient(track)
	c.CommandTimeout = to.Hello
	c.SubmissionTimeout = to.DataEnd
	if err := c.Hello(s.helloName); err != nil {
		return fail(s.errOutcome(ctx, err))
	}
	if sh := s.cfg.Smarthost; sh != nil && sh.Auth != nil {
		if !isTLS && !sh.AllowInsecureAuth {
			return fail(s.localPtr(replyInsecureAuth, errors.New("deliver: refusing AUTH without TLS")))
		}
		if err := c.Auth(sh.Auth()); err != nil {
			return fail(s.errOutcome(ctx, err))
		}
	}
	if !stop() {
		return fail(s.errOutcome(ctx, ctx.Err()))
	}
	now := time.Now()
	ss := &session{
		s: s, raw: raw, track: track, host: h, site: rt.site, sourceIP: src,
		permit: p, tls: isTLS, created: now, lastUsed: now,
		closeRaw: func() { raw.Close() },
		br:       bufio.NewReader(track),
	}
	// Close closes every connection when it gives up waiting; each Send's
	// context need not carry that (see sendCtx).
	ss.stopBase = context.AfterFunc(s.base, ss.closeRaw)
	ss.pipelining, _ = c.Extension("PIPELINING")
	ss.pipelining = ss.pipelining && !s.cfg.DisablePipelining
	ss.eightBitMIME, _ = c.Extension("8BITMIME")
	ss.smtputf8, _ = c.Extension("SMTPUTF8")
	ss.sizeOffered, _ = c.Extension("SIZE")
	if max, ok := c.MaxMessageSize(); ok && max > 0 {
		ss.maxSize = int64(max)
	}
	return report(ss, nil)
}

func (s *Sender) tlsConfigFor(host string) *tls.Config {
	var cfg *tls.Config
	switch {
	case s.cfg.TLSConfig != nil:
		cfg = s.cfg.TLSConfig.Clone()
	case s.cfg.TLS == TLSRequired || s.cfg.Smarthost != nil:
		cfg = &tls.Config{}
	default:
		// Opportunistic TLS without authentication (RFC 7435, Postfix "may").
		cfg = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // documented opportunistic mode
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	return cfg
}

// rcptOutcome is what became of one recipient in a transaction.
type rcptOutcome struct {
	delivered         bool
	notTried          bool // 452 too many recipients: try in the next transaction
	possiblyDelivered bool // lost after the final dot
	out               outcome
}

// close ends the session (QUIT when it is healthy and quit is set) and
// releases its governor slot. Safe to call more than once.
func (ss *session) close(ctx context.Context, quit bool) {
	ss.closeOnce.Do(func() {
		graceful := false
		if quit && !ss.broken {
			stop := context.AfterFunc(ctx, func() { ss.raw.Close() })
			graceful = ss.quit()
			stop()
		}
		ss.raw.Close()
		if ss.stopBase != nil {
			ss.stopBase()
		}
		ss.broken = true
		ss.s.learn.closed(poolKey{ss.sourceIP, ss.site}, graceful)
		if ss.permit != nil {
			ss.permit.Release()
		}
	})
}

// quit sends QUIT and waits until the receiver closes its side (RFC 5321
// 4.1.1.10: it MUST, after its 221), so that a replacement connection does
// not reach it while it still counts this one. go-smtp's Quit closes at
// once on the 221, so QUIT is written here, below go-smtp's idle writer
// and above TLS. It reports whether the receiver closed in time.
func (ss *session) quit() bool {
	ss.track.SetDeadline(time.Now().Add(min(ss.s.timeouts.Hello, quitTimeout)))
	if _, err := ss.track.Write([]byte("QUIT\r\n")); err != nil {
		return false
	}
	var buf [512]byte
	for {
		if _, err := ss.track.Read(buf[:]); err != nil {
			return errors.Is(err, io.EOF)
		}
	}
}

// quitTimeout bounds the wait for the receiver to close after QUIT.
const quitTimeout = 2 * time.Second

// usable reports whether ss can take another message.
func (ss *session) usable(now time.Time) bool {
	if ss.broken || ss.messages >= ss.s.maxPerConn || now.Sub(ss.created) >= ss.s.maxConnAge {
		return false
	}
	if n := ss.s.learn.perConn(poolKey{ss.sourceIP, ss.site}); n > 0 && ss.messages >= n {
		return false
	}
	return true
}

// perConnectionCap recognises a receiver's "too many messages on this
// connection" reply (Postfix smtpd, Yahoo, Exim, Sendmail texts).
func perConnectionCap(text string) bool {
	t := strings.ToLower(text)
	return strings.Contains(t, "per connection") || strings.Contains(t, "this connection") ||
		strings.Contains(t, "per session") || strings.Contains(t, "this session")
}

// errOutcome classifies an error of a step. A context error (the caller's
// cancellation or deadline) wins over the network error it caused.
func (s *Sender) errOutcome(ctx context.Context, err error) *outcome {
	if ctx.Err() != nil && !isSMTPError(err) {
		err = fmt.Errorf("%w (%w)", causeOf(ctx), err)
	}
	o := &outcome{err: err}
	if r, ok := smtpcode.FromError(err); ok {
		o.reply = r
		o.class = s.classify(r)
		return o
	}
	o.class = smtpcode.ClassifyError(err)
	return o
}

// causeOf is context.Cause, or Err when Cause knows nothing (a sendCtx
// whose Sender was closed while its caller's context is still live).
func causeOf(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}

func (s *Sender) localPtr(r smtpcode.Reply, err error) *outcome {
	o := s.localOutcome(r, err)
	return &o
}

func (s *Sender) localOutcome(r smtpcode.Reply, err error) outcome {
	return outcome{reply: r, err: err, class: s.classify(r), local: true}
}

func (s *Sender) classify(r smtpcode.Reply) smtpcode.Classification {
	if s.cfg.Classifier != nil {
		return s.cfg.Classifier.Classify(r)
	}
	return smtpcode.Classify(r)
}

func isSMTPError(err error) bool {
	var se *smtp.SMTPError
	var te *textproto.Error
	return errors.As(err, &se) || errors.As(err, &te)
}

// defaultDial dials from source with a net.Dialer.
func defaultDial(timeout time.Duration) func(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error) {
	return func(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		if source.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: source.AsSlice(), Zone: source.Zone()}
		}
		return d.DialContext(ctx, network, addr)
	}
}
