package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	netsmtp "net/smtp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

// SendNetSMTP sends msg as one transaction through c, an open net/smtp
// client connected to host (the name you dialled; it gives the site key
// through Config.SiteKey or SiteOf). It validates msg as Send does, takes the
// same governor permits (a connection slot on the source IP, site and pair
// keys for the length of the transaction, a message token, the message's
// own Keys), classifies every reply, feeds the governor and returns one
// Result per recipient. Recipients of every domain go to host.
//
// What it can and cannot enforce: net/smtp gives no access to its
// net.Conn, so deadlines are enforced by a watchdog that closes the client
// (c.Close) when a step overruns its Timeouts value or ctx ends; after that
// c is unusable. It cannot see whether the final dot was written, so any
// network error after the body marks the recipients PossiblyDelivered.
// It does not retry on another connection (the connection is yours):
// a congestion reply comes back Deferred. After a failed transaction it
// sends RSET, so c stays usable unless the result says otherwise (a 421 or
// a network error: close c).
func (s *Sender) SendNetSMTP(ctx context.Context, c *netsmtp.Client, host string, msg *Message) ([]Result, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil *smtp.Client", ErrInvalidMessage)
	}
	st, ctx, err := s.begin(ctx, msg)
	if err != nil {
		return nil, err
	}
	defer st.end()
	p := st.p
	site := ""
	if s.cfg.SiteKey != nil {
		site = s.cfg.SiteKey("", []string{host})
	}
	if site == "" {
		site = SiteOf(host, []string{host})
	}
	all := make([]int, len(p.rcpts))
	for i, r := range p.rcpts {
		st.res[i].Recipient, st.res[i].Site, st.res[i].Host = r.addr, site, host
		all[i] = i
	}
	finishAll := func(o *outcome, retryAt time.Time) ([]Result, error) {
		for _, i := range all {
			if st.res[i].Status == 0 {
				st.finish(i, o, retryAt)
			}
		}
		return st.results(msg), nil
	}

	waitCtx := s.newWaitCtx(ctx)
	defer waitCtx.stop()
	if len(p.keys) > 0 {
		if o, retryAt := st.takeKeys(waitCtx); o != nil {
			return finishAll(o, retryAt)
		}
	}
	keys := connKeys(st.src, site)
	if o, retryAt := s.take(waitCtx, site, keys); o != nil {
		return finishAll(o, retryAt)
	}
	pm, dec, err := s.lim.acquire(waitCtx, keys, nil)
	if s.cfg.Hooks.Wait != nil && (err != nil || dec.Waited > 0) {
		s.cfg.Hooks.Wait(WaitInfo{Site: site, Keys: keys, Decision: dec, Err: err})
	}
	if err != nil {
		return finishAll(&outcome{err: err, class: smtpcode.ClassifyError(err)}, dec.RetryAt)
	}
	defer pm.Release()

	start := time.Now()
	res, last := s.netsmtpTransaction(ctx, c, p)
	accepted := 0
	for i, r := range res {
		st.res[i].Attempts = 1
		switch {
		case r.delivered:
			accepted++
			st.res[i].Status = Delivered
			st.res[i].Reply = last.reply
			st.res[i].Class = last.class
		default:
			o := r.out
			st.finish(i, &o, time.Time{})
			if r.possiblyDelivered {
				st.res[i].PossiblyDelivered = true
				if st.res[i].Status == Bounced {
					st.res[i].Status, st.res[i].RetryAt = Deferred, time.Now()
				}
			}
		}
	}
	s.feedbackTransaction(&session{permit: pm}, keys[2], last, accepted, start)
	if s.cfg.Hooks.Attempt != nil {
		s.cfg.Hooks.Attempt(AttemptInfo{Site: site, Host: host, SourceIP: st.src, Recipients: len(res), Accepted: accepted,
			Reply: last.reply, Class: last.class, Err: last.err, Duration: time.Since(start)})
	}
	return st.results(msg), nil
}

// netsmtpTransaction runs MAIL, RCPT, DATA on c under a watchdog.
func (s *Sender) netsmtpTransaction(ctx context.Context, c *netsmtp.Client, p *prepared) (res []rcptOutcome, last outcome) {
	to := s.timeouts
	res = make([]rcptOutcome, len(p.rcpts))
	var closeOnce sync.Once
	closeClient := func() { closeOnce.Do(func() { c.Close() }) }
	wd := time.AfterFunc(to.Mail, closeClient)
	defer wd.Stop()
	stop := context.AfterFunc(ctx, closeClient)
	defer stop()

	fail := func(err error, idx []int) outcome {
		o := *s.errOutcome(ctx, err)
		for _, i := range idx {
			res[i].out = o
		}
		return o
	}
	all := make([]int, len(p.rcpts))
	for i := range all {
		all[i] = i
	}
	if p.smtputf8 {
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			o := s.localOutcome(replyNoSMTPUTF8, errors.New("deliver: receiver lacks SMTPUTF8"))
			for i := range res {
				res[i].out = o
			}
			return res, o
		}
	}
	if err := c.Mail(p.from); err != nil {
		return res, fail(err, all)
	}
	var accepted []int
	wd.Reset(to.Rcpt)
	for i, r := range p.rcpts {
		wd.Reset(to.Rcpt)
		if err := c.Rcpt(r.addr); err != nil {
			last = fail(err, []int{i})
			if !isSMTPError(err) || last.reply.Code == 421 {
				fail(err, accepted)
				fail(err, all[i:])
				return res, last
			}
			continue
		}
		accepted = append(accepted, i)
	}
	reset := func() {
		wd.Reset(to.Hello)
		c.Reset()
	}
	if len(accepted) == 0 {
		reset()
		return res, last
	}
	wd.Reset(to.DataInit)
	w, err := c.Data()
	if err != nil {
		last = fail(err, accepted)
		if isSMTPError(err) && last.reply.Code != 421 {
			reset()
		}
		return res, last
	}
	for off := 0; off < len(p.data); off += 64 << 10 {
		wd.Reset(to.DataBlock)
		if _, err := w.Write(p.data[off:min(off+64<<10, len(p.data))]); err != nil {
			return res, fail(err, accepted)
		}
	}
	wd.Reset(to.DataEnd)
	if err := w.Close(); err != nil {
		last = fail(err, accepted)
		if !isSMTPError(err) {
			for _, i := range accepted {
				res[i].possiblyDelivered = true
			}
		}
		return res, last
	}
	for _, i := range accepted {
		res[i].delivered = true
	}
	return res, outcome{reply: smtpcode.Reply{Code: 250}, class: successClass}
}

// SendError is SendMail's error when some recipient was not delivered. It
// unwraps to the first failure's error, so errors.As finds a
// *textproto.Error or *smtp.SMTPError there and smtpcode.FromError the reply.
type SendError struct {
	Results []Result
}

func (e *SendError) Error() string {
	var b strings.Builder
	b.WriteString("deliver: not delivered:")
	for _, r := range e.Results {
		if r.Status == Delivered {
			continue
		}
		fmt.Fprintf(&b, " <%s> %s", r.Recipient, r.Status)
		if r.Reply.Code != 0 {
			fmt.Fprintf(&b, " (%s)", r.Reply.String())
		} else if r.Err != nil {
			fmt.Fprintf(&b, " (%v)", r.Err)
		}
		b.WriteString(";")
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Unwrap returns the first failed recipient's error.
func (e *SendError) Unwrap() error {
	for _, r := range e.Results {
		if r.Status != Delivered && r.Err != nil {
			return r.Err
		}
	}
	return nil
}

var (
	sendMailGovOnce sync.Once
	sendMailGov     *governor.Governor
)

// SendMail is a drop-in for net/smtp.SendMail, with its signature: it
// connects to addr, switches to TLS when the server offers STARTTLS
// (verifying the certificate for addr's host, as net/smtp does),
// authenticates with a if not nil (only over TLS, or to localhost, as
// net/smtp's PlainAuth insists), and sends msg from from to every address
// in to. Unlike net/smtp it validates the addresses, normalizes line
// endings, applies RFC 5321 timeouts, and goes through a process-wide
// governor with DefaultPolicy (so concurrent calls to one site stay under
// its limits). It returns nil when every recipient was delivered, else a
// *SendError with one Result per recipient (some may have been delivered:
// net/smtp would have given up on the first refused recipient).
func SendMail(addr string, a netsmtp.Auth, from string, to []string, msg []byte) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("deliver: SendMail address %q: %w", addr, err)
	}
	sendMailGovOnce.Do(func() {
		sendMailGov, _ = governor.New(governor.Config{Policy: DefaultPolicy()})
	})
	local := host == "localhost"
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		local = true
	}
	sh := &Smarthost{Addr: addr, AllowInsecureAuth: local}
	if a != nil {
		sh.Auth = func() sasl.Client { return &netAuthClient{a: a, info: &netsmtp.ServerInfo{Name: host, TLS: !local}} }
	}
	s, err := New(Config{
		HelloName:   "localhost", // as net/smtp
		Smarthost:   sh,
		TLSConfig:   &tls.Config{ServerName: host},
		Governor:    sendMailGov,
		IdleTimeout: -1,
		Dial:        sendMailDial,
	})
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	res, err := s.Send(context.Background(), &Message{From: from, To: to, Data: msg})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Status != Delivered {
			return &SendError{Results: res}
		}
	}
	return nil
}

// sendMailDial is nil in production (the default dialer); tests replace it.
var sendMailDial func(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error)

// netAuthClient adapts a net/smtp.Auth to go-sasl's client interface.
type netAuthClient struct {
	a    netsmtp.Auth
	info *netsmtp.ServerInfo
}

func (n *netAuthClient) Start() (string, []byte, error) {
	return n.a.Start(n.info)
}

func (n *netAuthClient) Next(challenge []byte) ([]byte, error) {
	return n.a.Next(challenge, true)
}
