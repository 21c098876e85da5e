package delivertest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type backend struct{ s *Server }

// bufPool holds body buffers: the record keeps an exact-size copy.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// connOf finds our connection under go-smtp's, TLS or not.
func connOf(c *smtp.Conn) *serverConn {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, _ := nc.(*serverConn)
	return sc
}

// NewSession runs at EHLO/HELO (go-smtp has greeted already), and again
// after STARTTLS.
func (b backend) NewSession(conn *smtp.Conn) (smtp.Session, error) {
	c := connOf(conn)
	if c == nil {
		return nil, errors.New("delivertest: unknown connection")
	}
	if _, ok := conn.TLSConnectionState(); ok {
		b.s.mu.Lock()
		c.rec.TLS = true
		b.s.mu.Unlock()
	}
	ss := &session{s: b.s, c: c}
	if err := ss.step(StepHello, "", b.s.cfg.Latency.Hello); err != nil {
		return nil, err
	}
	return ss, nil
}

type session struct {
	s    *Server
	c    *serverConn
	from string
	to   []string
}

// step waits the command's latency, then fires a fault at this step if one
// matches; a non-nil error is the session's answer (or an aborted
// connection).
func (ss *session) step(step Step, rcpt string, latency time.Duration) error {
	if !ss.s.sleep(latency) {
		ss.c.Close()
		return errAborted
	}
	ss.s.mu.Lock()
	f := ss.s.matchFaultLocked(step, ss.c.client, rcpt)
	ss.s.mu.Unlock()
	if f == nil {
		return nil
	}
	return ss.fault(f)
}

func (ss *session) fault(f *Fault) error {
	switch f.Action {
	case ActionReply:
		return ss.refuse(CauseFault, f.Reply)
	case ActionDrop:
		ss.c.Close()
	case ActionHang:
		ss.c.hang()
	case ActionGarbage:
		ss.c.writeGarbage()
		ss.c.Close()
	}
	return errAborted
}

// refuse returns r as the session's answer, recording cause; a 421 closes
// the connection once written.
func (ss *session) refuse(cause Cause, r Reply) error {
	e := r.smtpError(ss.c.client)
	c := ss.c
	if c.encrypted {
		ss.s.recordReply(c, r.Code, r.Enhanced, e.Message, cause)
		if r.Code == 421 {
			c.closeLines = strings.Count(e.Message, "\n") + 1
		}
		return e
	}
	c.cause = cause
	c.closeAfter = r.Code == 421
	return e
}

// accepted records, after STARTTLS, the 250 go-smtp is about to send (its
// text cannot be read on the wire any more); format takes the address, and
// is formatted only then.
func (ss *session) accepted(format, addr string) error {
	if ss.c.encrypted {
		ss.acceptedText(fmt.Sprintf(format, addr))
	}
	return nil
}

func (ss *session) acceptedText(text string) error {
	if ss.c.encrypted {
		ss.s.recordReply(ss.c, 250, "2.0.0", text, CauseNone)
	}
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
}

func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if err := ss.step(StepMail, "", ss.s.cfg.Latency.Mail); err != nil {
		return err
	}
	ss.s.mu.Lock()
	r, cause, refused := ss.s.messageLimitsLocked(ss.c, time.Now())
	ss.s.mu.Unlock()
	if refused {
		return ss.refuse(cause, r)
	}
	ss.from = from
	ss.to = ss.to[:0]
	return ss.accepted("Roger, accepting mail from <%v>", from)
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.step(StepRcpt, to, ss.s.cfg.Latency.Rcpt); err != nil {
		return err
	}
	cfg := &ss.s.cfg
	lim := cfg.limitsFor(ss.c.client)
	if lim.MaxRecipients > 0 && len(ss.to) >= lim.MaxRecipients {
		return ss.refuse(CauseMaxRecipients, lim.MaxRecipientsReply.or(DefaultMaxRecipientsReply))
	}
	if r, ok := cfg.Recipients[to]; ok && r.Code >= 400 {
		return ss.refuse(CauseRecipient, r)
	}
	if gl := cfg.Greylist; gl.Delay > 0 {
		now := time.Now()
		key := ss.c.client + "\x00" + ss.from + "\x00" + to
		ss.s.mu.Lock()
		first, seen := ss.s.greylist[key]
		if !seen {
			ss.s.greylist[key] = now
		}
		ss.s.mu.Unlock()
		if !seen || now.Sub(first) < gl.Delay {
			return ss.refuse(CauseGreylist, gl.Reply.or(DefaultGreylistReply))
		}
	}
	ss.to = append(ss.to, to)
	return ss.accepted("I'll make sure <%v> gets this", to)
}

func (ss *session) Data(r io.Reader) error {
	ss.s.mu.Lock()
	f := ss.s.matchFaultLocked(StepData, ss.c.client, "")
	body := false
	if f == nil {
		f = ss.s.matchFaultLocked(StepBody, ss.c.client, "")
		body = f != nil
	}
	ss.s.mu.Unlock()
	if body {
		// Part of the body, then the fault.
		var b [64]byte
		r.Read(b[:])
	}
	if f != nil {
		if f.Action == ActionGarbage {
			return ss.garbageDuringBody(r)
		}
		return ss.fault(f)
	}

	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	var err error
	if ss.s.cfg.DiscardData {
		_, err = io.Copy(io.Discard, r)
	} else {
		_, err = buf.ReadFrom(r)
	}
	if err != nil {
		return err // e.g. go-smtp's 552 5.3.4 over MaxMessageBytes
	}
	if !ss.s.sleep(ss.s.cfg.Latency.Data) {
		ss.c.Close()
		return errAborted
	}

	ss.s.mu.Lock()
	f = ss.s.matchFaultLocked(StepDot, ss.c.client, "")
	if f == nil || f.Action != ActionReply { // no valid reply: the client cannot know
		var data []byte
		if !ss.s.cfg.DiscardData {
			data = bytes.Clone(buf.Bytes())
		}
		ss.s.rec.messages.add(Message{
			ConnID: ss.c.id, Client: ss.c.client, From: ss.from, To: append([]string(nil), ss.to...),
			Data: data, Time: time.Now(), Dropped: f != nil,
		})
		if f == nil {
			ss.c.rec.Messages++
			ss.s.rec.accepted++
			ss.s.rec.client(ss.c.client).Messages++
		}
	}
	ss.s.mu.Unlock()
	if f != nil {
		return ss.fault(f)
	}
	return ss.acceptedText("OK: queued")
}

// garbageDuringBody writes garbage while the client is still sending its
// body. The write runs beside the read: on a net.Pipe, which has no buffer,
// writing while the client writes would block both forever.
func (ss *session) garbageDuringBody(r io.Reader) error {
	c := ss.c
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.writeGarbage()
	}()
	io.Copy(io.Discard, r)
	<-wrote
	c.Close()
	return errAborted
}

// writeGarbage writes Garbage and records it; after STARTTLS it goes raw,
// under the TLS layer.
func (c *serverConn) writeGarbage() {
	if c.encrypted {
		c.s.recordReply(c, 0, "", strings.TrimRight(Garbage, "\r\n"), CauseFault)
		c.Conn.Write([]byte(Garbage))
		return
	}
	c.cause = CauseFault
	c.Write([]byte(Garbage))
}

// AuthMechanisms offers PLAIN when Config.Users is set.
func (ss *session) AuthMechanisms() []string {
	if ss.s.cfg.Users == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if ss.s.cfg.Users == nil || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if pw, ok := ss.s.cfg.Users[username]; !ok || pw != password || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		ss.s.mu.Lock()
		ss.c.rec.User = username
		ss.s.mu.Unlock()
		return nil
	}), nil
}
