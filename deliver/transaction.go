package deliver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/smtpcode"
)

// The mail transaction (MAIL, RCPT, DATA, the body, RSET) is written here
// rather than through go-smtp's Client, which sends one command per round
// trip: with PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one
// write and their replies come back together, so a message costs two round
// trips instead of 3 + recipients. Against a receiver 50 ms away that
// doubles what one connection carries, and throttled receivers allow few
// connections. go-smtp's client still parses the EHLO reply (dialSession
// reads the greeting, and EHLO and STARTTLS itself when TLS may be used)
// and runs AUTH; the session keeps nothing of it.

// Limits on what readReply accepts before calling it a protocol error.
const (
	maxReplyBytes = 64 << 10
	maxReplyLines = 512
)

// maxGroupBytes bounds a group of pipelined commands (see transaction).
const maxGroupBytes = 2 << 10

// bodyBlock is how much of the body goes in one write, under one
// Timeouts.DataBlock deadline.
const bodyBlock = 64 << 10

// bodyBuffers hold a body block once dot-stuffed.
var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// transaction sends one message to rcpts over ss. It returns one outcome
// per recipient, and leaves ss either clean (ready for MAIL) or broken.
func (ss *session) transaction(ctx context.Context, p *prepared, rcpts []int) (res []rcptOutcome, last outcome) {
	s := ss.s
	to := s.timeouts
	res = make([]rcptOutcome, len(rcpts))
	// setFrom gives o to every recipient from index i on; setAccepted to
	// those the receiver accepted.
	setFrom := func(i int, o outcome) {
		for ; i < len(res); i++ {
			res[i].out = o
		}
	}
	setAccepted := func(accepted []int, o outcome) {
		for _, i := range accepted {
			res[i].out = o
		}
	}

	if p.smtputf8 && !ss.smtputf8 {
		o := s.localOutcome(replyNoSMTPUTF8, errors.New("deliver: receiver lacks SMTPUTF8"))
		setFrom(0, o)
		return res, o
	}
	if ss.maxSize > 0 && int64(len(p.data)) > ss.maxSize {
		o := s.localOutcome(replyTooBig, fmt.Errorf("deliver: message is %d bytes, receiver's SIZE %d", len(p.data), ss.maxSize))
		setFrom(0, o)
		return res, o
	}

	// ctx cancellation closes the connection. A Send's context is watched
	// through its caller's (Close's own cancellation reaches the connection
	// through its registration on the Sender's base), and not at all when
	// the caller's cannot be cancelled.
	watch := ctx
	if sc, ok := ctx.(*sendCtx); ok {
		watch = sc.Context
	}
	stop := func() bool { return true }
	if watch.Done() != nil {
		stop = context.AfterFunc(watch, ss.closeRaw)
	}
	defer func() {
		if !stop() || ctx.Err() != nil {
			ss.broken = true
		}
		ss.lastUsed = time.Now()
	}()

	// failed turns an error (network, protocol, ctx) into an outcome; the
	// connection is no longer usable.
	failed := func(err error) outcome {
		ss.broken = true
		return *s.errOutcome(ctx, err)
	}
	// refused turns a reply that is not the expected one into an outcome.
	refused := func(code int, raw []byte) outcome {
		o := ss.replyOutcome(code, raw)
		if o.reply.Code == 421 || ctx.Err() != nil {
			ss.broken = true
		}
		return o
	}

	// The commands are steps: 0 is MAIL, 1..n the RCPTs, n+1 DATA. With
	// PIPELINING they go out in groups of up to maxGroupBytes, each group
	// in one write, and their replies are read in order after it; without,
	// one command at a time. A group is bounded so that a receiver which
	// reads one buffer, then writes its replies before reading more,
	// cannot deadlock with us over a connection without buffers (net.Pipe).
	pipelined := ss.pipelining
	tMail, tRcpt, tData := to.Mail, to.Rcpt, to.DataInit
	if pipelined {
		// One deadline for a group's write and replies: every command in
		// it was sent at the same time.
		tMail = max(to.Mail, to.Rcpt, to.DataInit)
		tRcpt, tData = tMail, tMail
	}
	dataStep := len(rcpts) + 1
	written, read := 0, 0
	sendGroup := func(timeout time.Duration) error {
		b := ss.wbuf[:0]
		for written <= dataStep {
			mark := len(b)
			switch {
			case written == 0:
				b = ss.appendMail(b, p)
			case written < dataStep:
				b = appendRcpt(b, p.rcpts[rcpts[written-1]].addr)
			default:
				b = append(b, "DATA\r\n"...)
			}
			if len(b) > maxGroupBytes && mark > 0 {
				b = b[:mark] // the next group
				break
			}
			written++
			if !pipelined {
				break
			}
		}
		err := ss.send(b, timeout)
		ss.keepBuffer(b)
		return err
	}
	// next reads the reply to the next step, writing the next group first
	// when every written command has had its reply.
	next := func(timeout time.Duration) (int, []byte, error) {
		if read == written {
			if err := sendGroup(timeout); err != nil {
				return 0, nil, err
			}
		}
		read++
		return ss.readReply(timeout)
	}

	// MAIL.
	code, raw, err := next(tMail)
	if err != nil {
		o := failed(err)
		setFrom(0, o)
		return res, o
	}
	if code/100 != 2 {
		o := refused(code, raw)
		if !ss.broken {
			// The rest of the group was refused too (503 bad sequence):
			// read those replies to stay in step.
			ss.skipReplies(written-read, tMail)
		}
		if ss.messages > 0 && o.reply.Code == 421 && perConnectionCap(o.reply.Text) {
			// "Max messages per connection reached": not a throttle, the
			// connection is used up. Nothing was attempted; try a new one.
			ss.exhausted = true
			ss.s.learn.perConnCap(poolKey{ss.sourceIP, ss.site}, ss.messages)
			for i := range res {
				res[i].notTried = true
			}
			return res, o
		}
		setFrom(0, o)
		return res, o
	}

	// RCPT. A 452 "too many recipients" (RFC 5321 4.5.3.1.10; 552 is the
	// legacy code) after an accepted recipient leaves that recipient for
	// another transaction.
	var accepted, tooMany []int
	untried := len(rcpts) // one at a time: the recipients from here on were not sent
	for i := range rcpts {
		code, raw, err := next(tRcpt)
		if err != nil {
			o := failed(err)
			setAccepted(accepted, o)
			setFrom(i, o)
			return res, o
		}
		if code/100 == 2 {
			accepted = append(accepted, i)
			continue
		}
		o := refused(code, raw)
		res[i].out = o
		last = o
		if ss.broken {
			// A 421: the session is gone, and every other recipient with it.
			setAccepted(accepted, o)
			setFrom(i, o)
			return res, o
		}
		if tooManyRecipients(o.reply) && (pipelined || len(accepted) > 0) {
			tooMany = append(tooMany, i)
			if !pipelined {
				untried = i + 1
				break
			}
		}
	}
	if len(accepted) > 0 {
		for _, i := range tooMany {
			res[i].notTried = true
		}
		for i := untried; i < len(res); i++ {
			res[i].notTried = true
		}
	}

	// DATA.
	if len(accepted) == 0 && written <= dataStep {
		// Not sent: nothing to send it for.
		ss.reset()
		return res, last
	}
	if read == written && written < dataStep {
		// One command at a time, stopped at a 452: skip the untried.
		read, written = dataStep, dataStep
	}
	code, raw, err = next(tData)
	if err != nil {
		o := failed(err)
		if len(accepted) == 0 {
			return res, last
		}
		setAccepted(accepted, o)
		return res, o
	}
	if code != 354 {
		o := refused(code, raw)
		if !ss.broken {
			ss.reset()
		}
		if len(accepted) == 0 {
			return res, last
		}
		setAccepted(accepted, o)
		return res, o
	}
	if len(accepted) == 0 {
		// RFC 2920 3.1: DATA accepted although no recipient was: send an
		// empty message, which the receiver then refuses.
		if err := ss.send(append(ss.wbuf[:0], ".\r\n"...), to.DataBlock); err != nil {
			ss.broken = true
		} else if _, _, err := ss.readReply(to.DataEnd); err != nil {
			ss.broken = true
		}
		return res, last
	}

	// The body and the final dot.
	if err := ss.writeBody(p.data, to.DataBlock); err != nil {
		o := failed(err)
		setAccepted(accepted, o)
		return res, o
	}
	code, raw, err = ss.readReply(to.DataEnd)
	if err != nil {
		o := failed(err)
		lost := ss.track.wroteFinalDot()
		for _, i := range accepted {
			res[i].out = o
			res[i].possiblyDelivered = lost
		}
		return res, o
	}
	if code/100 != 2 {
		o := refused(code, raw)
		setAccepted(accepted, o)
		return res, o
	}
	ss.messages++
	for _, i := range accepted {
		res[i].delivered = true
	}
	r, perr := smtpcode.Parse(string(raw))
	if perr != nil || r.Code != code {
		r = smtpcode.Reply{Code: code}
	}
	return res, outcome{reply: r, class: successClass}
}

// successClass is how smtpcode classifies a 2xx reply (Rule RuleSuccess):
// what a delivered recipient's Result.Class says.
var successClass = smtpcode.Classification{Rule: smtpcode.RuleSuccess}

// tooManyRecipients reports a reply that asks for fewer recipients per
// transaction.
func tooManyRecipients(r smtpcode.Reply) bool {
	return (r.Code == 452 || r.Code == 552) &&
		(r.Enhanced == smtpcode.EnhancedCode{Class: 4, Subject: 5, Detail: 3} ||
			r.Enhanced == smtpcode.EnhancedCode{Class: 5, Subject: 5, Detail: 3} ||
			strings.Contains(strings.ToLower(r.Text), "too many recipients"))
}

// appendMail appends the MAIL command for p, with the parameters the
// receiver offered (as go-smtp's Client.Mail writes them).
func (ss *session) appendMail(b []byte, p *prepared) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, p.from...)
	b = append(b, '>')
	if ss.eightBitMIME {
		b = append(b, " BODY=8BITMIME"...)
	}
	if ss.sizeOffered {
		b = append(b, " SIZE="...)
		b = strconv.AppendInt(b, int64(len(p.data)), 10)
	}
	if p.smtputf8 {
		b = append(b, " SMTPUTF8"...)
	}
	return append(b, "\r\n"...)
}

func appendRcpt(b []byte, addr string) []byte {
	b = append(b, "RCPT TO:<"...)
	b = append(b, addr...)
	return append(b, ">\r\n"...)
}

// keepBuffer keeps b's array for the next commands unless it grew large
// (a transaction with many recipients).
func (ss *session) keepBuffer(b []byte) {
	if cap(b) <= 4<<10 {
		ss.wbuf = b[:0]
	}
}

// send writes b under a deadline of timeout, for the write and for
// reading the replies.
func (ss *session) send(b []byte, timeout time.Duration) error {
	now := time.Now()
	ss.track.SetDeadline(now.Add(timeout))
	ss.readTimeout, ss.readArmed = timeout, now
	_, err := ss.track.Write(b)
	return err
}

// writeBody writes data dot-stuffed (RFC 5321 4.5.2) and the final dot,
// in blocks of bodyBlock bytes, each under a deadline of timeout. data's
// lines end in CRLF (prepare normalized them).
func (ss *session) writeBody(data []byte, timeout time.Duration) error {
	bp := bodyBuffers.Get().(*[]byte)
	buf := *bp
	defer func() {
		if cap(buf) <= 2*bodyBlock+8 {
			*bp = buf[:0]
			bodyBuffers.Put(bp)
		}
	}()
	lineStart := true
	for {
		chunk := data[:min(len(data), bodyBlock)]
		data = data[len(chunk):]
		buf, lineStart = appendDotStuffed(buf[:0], chunk, lineStart)
		if len(data) == 0 {
			if !lineStart {
				buf = append(buf, "\r\n"...)
			}
			buf = append(buf, ".\r\n"...)
		}
		ss.track.SetWriteDeadline(time.Now().Add(timeout))
		ss.readTimeout = 0 // the reply to the dot gets its own read deadline
		if _, err := ss.track.Write(buf); err != nil {
			return err
		}
		if len(data) == 0 {
			return nil
		}
	}
}

// appendDotStuffed appends src to dst with one more '.' before every line
// that starts with one. lineStart says whether src begins a line; the
// result says whether the next byte after src would.
func appendDotStuffed(dst, src []byte, lineStart bool) ([]byte, bool) {
	for len(src) > 0 {
		if lineStart && src[0] == '.' {
			dst = append(dst, '.')
		}
		i := bytes.IndexByte(src, '\n')
		if i < 0 {
			return append(dst, src...), false
		}
		dst = append(dst, src[:i+1]...)
		src = src[i+1:]
		lineStart = true
	}
	return dst, lineStart
}

// readReply reads one reply (RFC 5321 4.2: "ddd-text" lines, the last one
// "ddd text") under a read deadline of timeout, re-armed only when half of
// it has gone by (a pipelined group's replies share one). raw is the whole
// reply, valid until the next read.
func (ss *session) readReply(timeout time.Duration) (code int, raw []byte, err error) {
	if now := time.Now(); timeout != ss.readTimeout || now.Sub(ss.readArmed) > timeout/2 {
		ss.track.SetReadDeadline(now.Add(timeout))
		ss.readTimeout, ss.readArmed = timeout, now
	}
	ss.rbuf = ss.rbuf[:0]
	for lines := 0; ; lines++ {
		start := len(ss.rbuf)
		line, err := ss.br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) && len(ss.rbuf)+len(line) < maxReplyBytes {
			// A line longer than the reader's buffer: keep reading it.
			ss.rbuf = append(ss.rbuf, line...)
			line, err = ss.br.ReadSlice('\n')
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return 0, nil, textproto.ProtocolError("reply longer than 64 KiB")
			}
			return 0, nil, err
		}
		ss.rbuf = append(ss.rbuf, line...)
		l := bytes.TrimRight(ss.rbuf[start:], "\r\n")
		c, final, ok := replyLineCode(l)
		if !ok {
			return 0, nil, textproto.ProtocolError("malformed reply line: " + strconv.Quote(string(l[:min(len(l), 64)])))
		}
		if lines == 0 {
			code = c
		} else if c != code {
			return 0, nil, textproto.ProtocolError("reply lines with different codes")
		}
		if final {
			return code, ss.rbuf, nil
		}
		if lines+1 >= maxReplyLines || len(ss.rbuf) >= maxReplyBytes {
			return 0, nil, textproto.ProtocolError("reply too long")
		}
	}
}

// replyLineCode reads the code of one reply line and whether it is the
// last line of its reply.
func replyLineCode(l []byte) (code int, final, ok bool) {
	if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
		return 0, false, false
	}
	code = int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
	switch {
	case len(l) == 3 || l[3] == ' ':
		return code, true, true
	case l[3] == '-':
		return code, false, true
	}
	return 0, false, false
}

// skipReplies reads n replies that cannot change the outcome (those to the
// rest of a group after MAIL was refused). A failure marks the session
// broken, and so does a 354: a receiver that accepted DATA after refusing
// MAIL now reads whatever follows as a message.
func (ss *session) skipReplies(n int, timeout time.Duration) {
	for range n {
		code, _, err := ss.readReply(timeout)
		if err != nil || code == 354 {
			ss.broken = true
			return
		}
	}
}

// replyOutcome is the outcome of a reply that refused a command; its error
// is a go-smtp *smtp.SMTPError, as Result.Err documents.
func (ss *session) replyOutcome(code int, raw []byte) outcome {
	r, err := smtpcode.Parse(string(raw))
	if err != nil || r.Code != code {
		r.Code = code
	}
	se := &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.NoEnhancedCode, Message: r.Text}
	if !r.Enhanced.IsZero() {
		se.EnhancedCode = smtp.EnhancedCode{r.Enhanced.Class, r.Enhanced.Subject, r.Enhanced.Detail}
	}
	return outcome{reply: r, err: se, class: ss.s.classify(r)}
}

// reset sends RSET after a transaction that did not complete; a successful
// DATA ends the transaction by itself, so reset is never called after one.
func (ss *session) reset() {
	if err := ss.send(append(ss.wbuf[:0], "RSET\r\n"...), ss.s.timeouts.Hello); err != nil {
		ss.broken = true
		return
	}
	if code, _, err := ss.readReply(ss.s.timeouts.Hello); err != nil || code != 250 {
		ss.broken = true
	}
}
