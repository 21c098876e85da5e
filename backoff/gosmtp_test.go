package backoff

import (
	"context"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	smtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/smtpcode"
)

// pipeListener hands net.Pipe server ends to a go-smtp server, so that a
// real client and server talk inside a synctest bubble without sockets.
type pipeListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client end of a new connection to the server.
func (l *pipeListener) dial() (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// busyBackend answers MAIL with Gmail's 421 4.4.5 in its first refuse
// sessions, then accepts the message.
type busyBackend struct {
	mu        sync.Mutex
	sessions  int
	refuse    int
	delivered int
}

func (b *busyBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions++
	return &busySession{b: b, busy: b.sessions <= b.refuse}, nil
}

type busySession struct {
	b    *busyBackend
	busy bool
}

func (s *busySession) Reset()        {}
func (s *busySession) Logout() error { return nil }
func (s *busySession) Mail(string, *smtp.MailOptions) error {
	if s.busy {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "Server busy, try again later."}
	}
	return nil
}
func (s *busySession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *busySession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.delivered++
	s.b.mu.Unlock()
	return nil
}

// Retry around a real go-smtp client talking to a real go-smtp server that
// answers 421 4.4.5 twice: the waits are exactly the policy's, in fake time.
func TestRetryGoSMTPClientAgainstThrottlingServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := &busyBackend{refuse: 2}
		srv := smtp.NewServer(be)
		srv.Domain = "mx.example.test"
		srv.ErrorLog = log.New(io.Discard, "", 0)
		l := newPipeListener()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()

		type call struct {
			start, end time.Time
			err        error
		}
		var calls []call
		send := func(ctx context.Context) error {
			c := call{start: time.Now()}
			defer func() { c.end = time.Now(); calls = append(calls, c) }()
			conn, err := l.dial()
			if err != nil {
				c.err = err
				return err
			}
			client := smtp.NewClient(conn)
			defer client.Close()
			c.err = client.SendMail("sender@example.test", []string{"rcpt@example.test"},
				strings.NewReader("Subject: hello\r\n\r\nHello.\r\n"))
			if c.err == nil {
				c.err = client.Quit()
			}
			return c.err
		}

		p, err := NewPolicy(Settings{Rand: seeded()})
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, Retry(t.Context(), send, p))
		require.NoError(t, srv.Close())
		require.NoError(t, <-served)

		require.Len(t, calls, 3)
		assert.Equal(t, 1, be.delivered)
		ref := seeded()
		for i, c := range calls[:2] {
			var se *smtp.SMTPError
			require.ErrorAs(t, c.err, &se, "attempt %d", i+1)
			assert.Equal(t, 421, se.Code)
			assert.Equal(t, smtp.EnhancedCode{4, 4, 5}, se.EnhancedCode)

			want, err := p.NextAttempt(smtpcode.ClassifyError(c.err), i+1, start, c.end, ref)
			require.NoError(t, err)
			assert.Equal(t, want.Delay, calls[i+1].start.Sub(c.end), "wait after attempt %d", i+1)
		}
		assert.NoError(t, calls[2].err)
	})
}
