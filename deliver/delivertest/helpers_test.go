package delivertest

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness runs a test over loopback TCP (real time) and over the in-memory
// listener inside a synctest bubble (fake time).
type harness struct {
	name  string
	start func(Config) (*Server, error)
	ids   [2]string // two client identities (sending IPs)
	run   func(t *testing.T, f func(t *testing.T))
	fake  bool // fake time: timing may be asserted
}

var harnesses = []harness{
	{
		name:  "tcp",
		start: NewServer,
		ids:   [2]string{"127.0.0.1", "127.0.0.2"},
		run:   func(t *testing.T, f func(t *testing.T)) { f(t) },
	},
	{
		name:  "pipe",
		start: NewPipeServer,
		ids:   [2]string{"192.0.2.1", "192.0.2.2"},
		run:   func(t *testing.T, f func(t *testing.T)) { synctest.Test(t, f) },
		fake:  true,
	},
}

// eachHarness runs f under both harnesses as subtests.
func eachHarness(t *testing.T, f func(t *testing.T, h harness)) {
	for _, h := range harnesses {
		t.Run(h.name, func(t *testing.T) {
			h.run(t, func(t *testing.T) { f(t, h) })
		})
	}
}

func startServer(t *testing.T, h harness, cfg Config) *Server {
	t.Helper()
	srv, err := h.start(cfg)
	require.NoError(t, err)
	return srv
}

func dial(t *testing.T, srv *Server, identity string) *smtp.Client {
	t.Helper()
	c, err := srv.Client(identity)
	require.NoError(t, err)
	return c
}

// sendMail runs one transaction on c.
func sendMail(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// code returns the basic code of an SMTP error, 0 for any other error and -1
// for nil.
func code(err error) int {
	if err == nil {
		return -1
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	require.NoError(t, srv.WaitIdle(context.Background()))
}

func replyCodes(rs []RecordedReply) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.Code
	}
	return out
}

const body = "Subject: test\r\n\r\nhello\r\n"
