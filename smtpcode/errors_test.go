package smtpcode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/textproto"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestFromError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Reply
	}{
		{"go-smtp with enhanced code", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "Server busy, try again later."},
			Reply{421, EnhancedCode{4, 4, 5}, "Server busy, try again later."}},
		{"go-smtp dropped the last-line enhanced code", &smtp.SMTPError{Code: 550, Message: "No such user\n5.1.1 here"},
			Reply{550, EnhancedCode{5, 1, 1}, "No such user\nhere"}},
		{"go-smtp NoEnhancedCode", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "Transaction failed"},
			Reply{554, EnhancedCode{}, "Transaction failed"}},
		{"go-smtp EnhancedCodeNotSet, code in text", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "4.7.650 rate limited"},
			Reply{451, EnhancedCode{4, 7, 650}, "rate limited"}},
		{"go-smtp wrapped", fmt.Errorf("rcpt <a@example.org>: %w", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}),
			Reply{452, EnhancedCode{4, 5, 3}, "Too many recipients"}},
		{"net/smtp textproto", &textproto.Error{Code: 550, Msg: "5.1.1 The email account that you tried to reach does not exist.\n5.1.1 Please check"},
			Reply{550, EnhancedCode{5, 1, 1}, "The email account that you tried to reach does not exist.\nPlease check"}},
		{"net/smtp textproto wrapped twice", fmt.Errorf("send: %w", fmt.Errorf("data: %w", &textproto.Error{Code: 421, Msg: "4.7.0 [TSS04] deferred"})),
			Reply{421, EnhancedCode{4, 7, 0}, "[TSS04] deferred"}},
		{"code 0 with a reply in the text", &smtp.SMTPError{Message: "550 5.1.1 gone"}, Reply{550, EnhancedCode{5, 1, 1}, "gone"}},
		{"text with another code in it", &textproto.Error{Code: 554, Msg: "delivery failed: 421 4.4.2 timeout"},
			Reply{554, EnhancedCode{4, 4, 2}, "delivery failed: 421 4.4.2 timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromError(tt.err)
			require.True(t, ok)
			assert.Equal(t, tt.want, got)
		})
	}
	for _, err := range []error{nil, io.EOF, errors.New("550 5.1.1 looks like a reply but is not one"), (*smtp.SMTPError)(nil)} {
		_, ok := FromError(err)
		assert.False(t, ok, "%v", err)
	}
}

// pipeListener hands out one end of a net.Pipe once, then blocks until closed.
type pipeListener struct {
	conn chan net.Conn
	done chan struct{}
	once sync.Once
}

func newPipeListener(c net.Conn) *pipeListener {
	l := &pipeListener{conn: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conn <- c
	return l
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// rejectingSession refuses every recipient with a multi-line reply.
type rejectingSession struct{ err *smtp.SMTPError }

func (s *rejectingSession) Reset()                               {}
func (s *rejectingSession) Logout() error                        { return nil }
func (s *rejectingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *rejectingSession) Rcpt(string, *smtp.RcptOptions) error { return s.err }
func (s *rejectingSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

// TestGoSMTPDropsLastLineEnhancedCode runs a real go-smtp server and client
// over net.Pipe. The server writes a multi-line reply with the enhanced
// code on the last line only; the client's SMTPError has no enhanced code;
// FromError recovers it.
func TestGoSMTPDropsLastLineEnhancedCode(t *testing.T) {
	defer goleak.VerifyNone(t)

	rejection := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "The email account that you tried to reach does not exist.\nPlease check the address."}
	server := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &rejectingSession{err: rejection}, nil
	}))
	server.Domain = "mx.example.org"
	server.ErrorLog = log.New(io.Discard, "", 0)
	serverEnd, clientEnd := net.Pipe()
	l := newPipeListener(serverEnd)
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()

	client := smtp.NewClient(clientEnd)
	require.NoError(t, client.Hello("client.example.org"))
	require.NoError(t, client.Mail("sender@example.org", nil))
	err := client.Rcpt("nobody@example.org", nil)
	require.Error(t, err)

	var se *smtp.SMTPError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 550, se.Code)
	assert.Equal(t, smtp.EnhancedCode{0, 0, 0}, se.EnhancedCode, "go-smtp's client reads the enhanced code from the first line only")

	r, ok := FromError(err)
	require.True(t, ok)
	assert.Equal(t, Reply{550, EnhancedCode{5, 1, 1}, "The email account that you tried to reach does not exist.\nPlease check the address."}, r)
	c := ClassifyError(err)
	assert.False(t, c.Transient)
	assert.Equal(t, UnknownUser, c.Category)
	assert.Equal(t, ScopeRecipient, c.Scope)

	_ = client.Close()
	require.NoError(t, server.Close())
	<-served
}

func TestClassifyError(t *testing.T) {
	netOp := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name      string
		err       error
		transient bool
		category  Category
		rule      string
	}{
		{"nil", nil, false, Other, RuleNoError},
		{"reply", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "rate"}, true, RateLimit, "gmail-4.7.28"},
		{"permanent reply", &textproto.Error{Code: 550, Msg: "5.1.1 user unknown"}, false, UnknownUser, "text-unknown-user"},
		{"canceled", context.Canceled, true, Other, RuleContextCanceled},
		{"canceled wrapped", fmt.Errorf("send: %w", context.Canceled), true, Other, RuleContextCanceled},
		{"deadline", context.DeadlineExceeded, true, Network, RuleContextDeadline},
		{"dial deadline", &net.OpError{Op: "dial", Err: context.DeadlineExceeded}, true, Network, RuleContextDeadline},
		{"refused", netOp, true, Network, RuleNetwork},
		{"refused errno", syscall.ECONNREFUSED, true, Network, RuleNetwork},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true, Network, RuleNetwork},
		{"EOF", io.EOF, true, Network, RuleNetwork},
		{"unexpected EOF", fmt.Errorf("data: %w", io.ErrUnexpectedEOF), true, Network, RuleNetwork},
		{"closed", net.ErrClosed, true, Network, RuleNetwork},
		{"i/o timeout", os.ErrDeadlineExceeded, true, Network, RuleNetwork},
		{"dns", &net.DNSError{Err: "no such host", Name: "mx.example.org", IsNotFound: true}, true, Network, RuleNetwork},
		{"tls alert", tls.AlertError(40), true, Network, RuleTLS},
		{"tls record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true, Network, RuleTLS},
		{"tls plain error", errors.New("tls: handshake failure"), true, Network, RuleTLS},
		{"tls in a dial error", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, true, Network, RuleTLS},
		{"certificate", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true, Network, RuleTLS},
		{"hostname", x509.HostnameError{Host: "mx.example.org", Certificate: &x509.Certificate{}}, true, Network, RuleTLS},
		{"protocol error", fmt.Errorf("ehlo: %w", textproto.ProtocolError("short response: 25")), true, Other, RuleProtocolError},
		{"unknown", errors.New("something odd"), true, Other, RuleUnknownError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ClassifyError(tt.err)
			assert.Equal(t, tt.transient, c.Transient, "%s", c)
			assert.Equal(t, tt.category, c.Category, "%s", c)
			assert.Equal(t, tt.rule, c.Rule)
		})
	}
	// Cancellation stays recognisable on the error itself and is never permanent.
	err := fmt.Errorf("deliver: %w", context.Canceled)
	assert.True(t, errors.Is(err, context.Canceled))
	assert.True(t, ClassifyError(err).Transient)
}
