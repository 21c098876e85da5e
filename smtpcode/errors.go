package smtpcode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/emersion/go-smtp"
)

// FromError returns the reply carried by err: a go-smtp *smtp.SMTPError or
// a net/smtp *textproto.Error, or any error wrapping one (errors.As). ok is
// false when err carries neither.
//
// go-smtp's client reads the enhanced code only from the first line of a
// reply, so a server that writes it on the last line only (as go-smtp's own
// server does) leaves SMTPError.EnhancedCode unset and the code in Message;
// FromError recovers it from the text, the way Parse reads a wire reply.
func FromError(err error) (Reply, bool) {
	if err == nil {
		return Reply{}, false
	}
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok && se != nil {
		return fromSMTPError(se), true
	}
	if te, ok := errors.AsType[*textproto.Error](err); ok && te != nil {
		return fromLines(te.Code, te.Msg), true
	}
	return Reply{}, false
}

func fromSMTPError(se *smtp.SMTPError) Reply {
	r := fromLines(se.Code, se.Message)
	e := EnhancedCode{se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]}
	if validClass(e.Class) && e.Subject >= 0 && e.Detail >= 0 {
		r.Enhanced = e
	}
	return r
}

// fromLines rebuilds a reply from a basic code and the text lines a client
// kept (codes already stripped), then parses it.
func fromLines(code int, msg string) Reply {
	if code < 200 || code > 599 {
		code = 0
	}
	if code == 0 {
		r, _ := Parse(msg)
		return r
	}
	prefix := strconv.Itoa(code)
	var b strings.Builder
	b.Grow(len(msg) + 8)
	for i, line := range strings.Split(msg, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(prefix)
		b.WriteByte('-')
		b.WriteString(strings.TrimRight(line, "\r"))
	}
	r, err := Parse(b.String())
	if err != nil || r.Code != code {
		// The text itself held other codes; the client's code is the truth.
		r.Code = code
	}
	return r
}

// Rules that ClassifyError reports for errors that carry no reply.
const (
	// RuleContextCanceled: the caller canceled (context.Canceled). Not the
	// receiver's verdict: Transient, Category Other. Check
	// errors.Is(err, context.Canceled) before counting it as a failure.
	RuleContextCanceled = "context-canceled"
	// RuleContextDeadline: a context deadline passed
	// (context.DeadlineExceeded): Transient, Category Network.
	RuleContextDeadline = "context-deadline"
	// RuleNetwork: the connection failed (refused, reset, timeout, EOF,
	// DNS): Transient, Category Network.
	RuleNetwork = "network"
	// RuleTLS: the TLS handshake failed (a certificate the client would
	// not accept, an alert, an answer that is not TLS): Transient, Category
	// Network like any failed connection; the Rule tells it apart, for a
	// caller that wants to retry without TLS or alert an operator.
	RuleTLS = "tls-handshake"
	// RuleUnknownError: an error that is neither a reply nor a known
	// network failure. Never permanent: it may be anything.
	RuleUnknownError = "unknown-error"
	// RuleProtocolError: the server's answer was not a valid SMTP reply
	// (net/textproto.ProtocolError): Transient, Category Other.
	RuleProtocolError = "protocol-error"
	// RuleNoError: ClassifyError(nil).
	RuleNoError = "no-error"
)

// ClassifyError classifies err with the default classifier; see
// Classifier.ClassifyError.
func ClassifyError(err error) Classification { return defaultClassifier.ClassifyError(err) }

// ClassifyError classifies what a delivery attempt returned. A reply
// (FromError) is classified by Classify. Otherwise:
//
//   - nil: not transient, Category Other, Rule RuleNoError.
//   - context.Canceled: Transient, Category Other, Rule RuleContextCanceled.
//   - context.DeadlineExceeded, timeouts, refused or reset connections,
//     EOF, DNS failures, TLS handshake failures and other net.Error values:
//     Transient, Category Network, Scope connection, Rule
//     RuleContextDeadline, RuleTLS (handshake: certificates, alerts) or
//     RuleNetwork.
//   - a reply that is not valid SMTP (textproto.ProtocolError): Transient,
//     Category Other, Rule RuleProtocolError.
//   - anything else: Transient, Category Other, Rule RuleUnknownError.
//
// Only a receiver's reply can make a failure permanent; err itself stays
// recognisable with errors.Is and errors.As.
func (c *Classifier) ClassifyError(err error) Classification {
	if err == nil {
		return Classification{Rule: RuleNoError}
	}
	if r, ok := FromError(err); ok {
		return c.Classify(r)
	}
	network := Classification{Transient: true, Category: Network, Scope: ScopeConnection, Rule: RuleNetwork}
	switch {
	case errors.Is(err, context.Canceled):
		return Classification{Transient: true, Category: Other, Scope: ScopeUnknown, Rule: RuleContextCanceled}
	case errors.Is(err, context.DeadlineExceeded):
		network.Rule = RuleContextDeadline
		return network
	}
	if _, ok := errors.AsType[textproto.ProtocolError](err); ok {
		return Classification{Transient: true, Category: Other, Scope: ScopeConnection, Rule: RuleProtocolError}
	}
	if isTLSError(err) {
		network.Rule = RuleTLS
		return network
	}
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &opErr), errors.As(err, &dnsErr), errors.As(err, &netErr):
		return network
	}
	return Classification{Transient: true, Category: Other, Scope: ScopeUnknown, Rule: RuleUnknownError}
}

func isTLSError(err error) bool {
	var unknownAuth x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	if errors.As(err, &unknownAuth) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &recErr) || errors.As(err, &alert) {
		return true
	}
	// crypto/tls reports many handshake failures as plain errors
	// ("tls: handshake failure", "remote error: tls: bad certificate").
	return strings.Contains(err.Error(), "tls: ")
}
