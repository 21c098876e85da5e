package delivertest

import (
	"bytes"
	"context"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ehloSession is what a client sees of one session and what the server
// records of it.
type ehloSession struct {
	ext     map[string]string // extension: parameter, per go-smtp's client
	replies []RecordedReply
}

// runEHLOSession runs EHLO, one message and QUIT against a server of cfg,
// checking that the message is delivered and recorded.
func runEHLOSession(t *testing.T, h harness, cfg Config) ehloSession {
	t.Helper()
	srv := startServer(t, h, cfg)
	defer srv.Close()
	c := dial(t, srv, h.ids[0])
	require.NoError(t, c.Hello("client.test"))
	var out ehloSession
	out.ext = make(map[string]string)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "SIZE", "AUTH", "STARTTLS"} {
		if ok, param := c.Extension(ext); ok {
			out.ext[ext] = param
		}
	}
	require.NoError(t, sendMail(c, "a@example.org", []string{"b@example.com"}, body))
	require.NoError(t, c.Quit())
	waitIdle(t, srv)

	msgs := srv.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, "a@example.org", msgs[0].From)
	assert.Equal(t, []string{"b@example.com"}, msgs[0].To)
	assert.Equal(t, body, string(msgs[0].Data))
	out.replies = srv.Replies()
	// greeting, EHLO, MAIL, RCPT, DATA, final dot, QUIT
	require.Equal(t, []int{220, 250, 250, 250, 354, 250, 221}, replyCodes(out.replies))
	return out
}

func TestNoPipelining(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ext  map[string]string // expected besides PIPELINING, 8BITMIME, SMTPUTF8...
	}{
		{"zero config", Config{}, map[string]string{"SIZE": ""}},
		{"size", Config{MaxMessageBytes: 1 << 20}, map[string]string{"SIZE": "1048576"}},
		{"auth", Config{Users: map[string]string{"u": "p"}}, map[string]string{"SIZE": "", "AUTH": "PLAIN"}},
		{"preset", func() Config { c := Outlook(); c.StartTLS = false; return c }(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachHarness(t, func(t *testing.T, h harness) {
				with := runEHLOSession(t, h, tt.cfg)
				cfg := tt.cfg
				cfg.NoPipelining = true
				without := runEHLOSession(t, h, cfg)

				// Offered by default, hidden with NoPipelining.
				assert.Contains(t, with.ext, "PIPELINING")
				assert.NotContains(t, without.ext, "PIPELINING")
				// Every other extension is still there, unchanged.
				for _, ext := range []string{"8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "SIZE"} {
					assert.Contains(t, without.ext, ext)
				}
				for ext, param := range tt.ext {
					assert.Equal(t, param, without.ext[ext], ext)
				}
				delete(with.ext, "PIPELINING")
				assert.Equal(t, with.ext, without.ext)

				// The record is the same but for the PIPELINING line of the
				// EHLO reply, which is still one 250.
				require.Len(t, without.replies, len(with.replies))
				for i := range with.replies {
					w, wo := with.replies[i], without.replies[i]
					if i == 1 {
						assert.Equal(t, 250, wo.Code)
						assert.Equal(t, w.Enhanced, wo.Enhanced)
						lines := strings.Split(w.Text, "\n")
						require.Contains(t, lines, "PIPELINING")
						lines = slices.DeleteFunc(lines, func(l string) bool { return l == "PIPELINING" })
						assert.Equal(t, strings.Join(lines, "\n"), wo.Text)
						assert.Greater(t, len(lines), 2, "a multi-line reply still")
						continue
					}
					assert.Equal(t, w.Reply(), wo.Reply(), "reply %d", i)
					assert.Equal(t, w.Cause, wo.Cause, "reply %d", i)
				}
			})
		})
	}
}

func TestNoPipeliningWithStartTLSRefused(t *testing.T) {
	cfg := Config{NoPipelining: true, StartTLS: true}
	for name, start := range map[string]func(Config) (*Server, error){"tcp": NewServer, "pipe": NewPipeServer} {
		t.Run(name, func(t *testing.T) {
			srv, err := start(cfg)
			require.Error(t, err)
			assert.Nil(t, srv)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.ErrorContains(t, err, "NoPipelining with StartTLS")
		})
	}
	// Each alone is fine; so is a preset with StartTLS turned off.
	for _, cfg := range []Config{{NoPipelining: true}, {StartTLS: true}} {
		assert.NoError(t, cfg.validate(true))
		assert.NoError(t, cfg.validate(false))
	}
}

// wireRecorder is the raw connection under a serverConn in
// TestDropPipeliningLine: it keeps what is written.
type wireRecorder struct {
	net.Conn // nil: only Write is called
	buf      bytes.Buffer
	writes   int
}

func (w *wireRecorder) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}

// TestDropPipeliningLine drives serverConn.Write with writes go-smtp would
// not make (several lines at once, lines split across writes) as well as
// its own.
func TestDropPipeliningLine(t *testing.T) {
	const (
		hello = "250-mx Hello client.test\r\n"
		pipe  = "250-PIPELINING\r\n"
		bits  = "250-8BITMIME\r\n"
		size  = "250 SIZE\r\n"
	)
	tests := []struct {
		name       string
		off        bool // NoPipelining not set
		writes     []string
		wire       string
		rawWrites  int      // writes that reached the raw connection
		replyTexts []string // recorded, in order
	}{
		{
			name:       "one line per write, as go-smtp",
			writes:     []string{hello, pipe, bits, size},
			wire:       hello + bits + size,
			rawWrites:  3,
			replyTexts: []string{"mx Hello client.test\n8BITMIME\nSIZE"},
		},
		{
			name:       "all lines in one write",
			writes:     []string{hello + pipe + bits + size},
			wire:       hello + bits + size,
			rawWrites:  1,
			replyTexts: []string{"mx Hello client.test\n8BITMIME\nSIZE"},
		},
		{
			name:       "dropped line first of a write",
			writes:     []string{hello, pipe + bits, size},
			wire:       hello + bits + size,
			rawWrites:  3,
			replyTexts: []string{"mx Hello client.test\n8BITMIME\nSIZE"},
		},
		{
			name:       "dropped line last of a write",
			writes:     []string{hello + pipe, bits + size},
			wire:       hello + bits + size,
			rawWrites:  2,
			replyTexts: []string{"mx Hello client.test\n8BITMIME\nSIZE"},
		},
		{
			name:       "keyword in any case, bare LF",
			writes:     []string{hello, "250-pipelining\r\n", "250-Pipelining\n", size},
			wire:       hello + size,
			rawWrites:  2,
			replyTexts: []string{"mx Hello client.test\nSIZE"},
		},
		{
			name:       "replies before and after",
			writes:     []string{"220 mx ESMTP\r\n", hello + pipe + size + "250 2.0.0 OK\r\n"},
			wire:       "220 mx ESMTP\r\n" + hello + size + "250 2.0.0 OK\r\n",
			rawWrites:  2,
			replyTexts: []string{"mx ESMTP", "mx Hello client.test\nSIZE", "OK"},
		},
		{
			name:       "last line kept: its '-' cannot be undone",
			writes:     []string{hello, "250 PIPELINING\r\n"},
			wire:       hello + "250 PIPELINING\r\n",
			rawWrites:  2,
			replyTexts: []string{"mx Hello client.test\nPIPELINING"},
		},
		{
			name:       "other keywords kept",
			writes:     []string{hello, "250-PIPELINING2\r\n", "250-X-PIPELINING\r\n", "251-PIPELINING\r\n", size},
			wire:       hello + "250-PIPELINING2\r\n" + "250-X-PIPELINING\r\n" + "251-PIPELINING\r\n" + size,
			rawWrites:  5,
			replyTexts: []string{"mx Hello client.test\nPIPELINING2\nX-PIPELINING\nPIPELINING\nSIZE"},
		},
		{
			name:       "not at the start of a line",
			writes:     []string{"250-mx Hello ", pipe, size},
			wire:       "250-mx Hello " + pipe + size,
			rawWrites:  3,
			replyTexts: []string{"mx Hello 250-PIPELINING\nSIZE"},
		},
		{
			name:       "split across writes: left alone",
			writes:     []string{hello, "250-PIPE", "LINING\r\n", size},
			wire:       hello + pipe + size,
			rawWrites:  4,
			replyTexts: []string{"mx Hello client.test\nPIPELINING\nSIZE"},
		},
		{
			name:       "NoPipelining off",
			off:        true,
			writes:     []string{hello + pipe + bits, size},
			wire:       hello + pipe + bits + size,
			rawWrites:  2,
			replyTexts: []string{"mx Hello client.test\nPIPELINING\n8BITMIME\nSIZE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := NewPipeServer(Config{NoPipelining: !tt.off})
			require.NoError(t, err)
			defer srv.Close()
			raw := &wireRecorder{}
			c := &serverConn{Conn: raw, s: srv, id: 1, client: "192.0.2.1", greeted: true}
			for _, w := range tt.writes {
				n, err := c.Write([]byte(w))
				require.NoError(t, err)
				assert.Equal(t, len(w), n, "go-smtp sees all of %q written", w)
			}
			assert.Equal(t, tt.wire, raw.buf.String())
			assert.Equal(t, tt.rawWrites, raw.writes)
			var texts []string
			for _, r := range srv.Replies() {
				texts = append(texts, r.Text)
			}
			assert.Equal(t, tt.replyTexts, texts)
		})
	}
}

// TestPipelinedCommands writes MAIL, RCPT and DATA in one write, as a
// pipelining client does, then the body and QUIT in another, and reads the
// replies in order. With NoPipelining the offer is hidden, but go-smtp
// still reads ahead and answers them all.
func TestPipelinedCommands(t *testing.T) {
	for _, noPipelining := range []bool{false, true} {
		name := "PIPELINING offered"
		if noPipelining {
			name = "NoPipelining"
		}
		t.Run(name, func(t *testing.T) {
			eachHarness(t, func(t *testing.T, h harness) {
				srv := startServer(t, h, Config{NoPipelining: noPipelining})
				defer srv.Close()
				conn, err := Dialer{Identity: h.ids[0]}.DialContext(context.Background(), "tcp", srv.Addr())
				require.NoError(t, err)
				defer conn.Close()
				tc := textproto.NewConn(conn)

				_, _, err = tc.ReadResponse(220)
				require.NoError(t, err)
				require.NoError(t, tc.PrintfLine("EHLO client.test"))
				_, ehlo, err := tc.ReadResponse(250)
				require.NoError(t, err)
				assert.Equal(t, !noPipelining, slices.Contains(strings.Split(ehlo, "\n"), "PIPELINING"), ehlo)

				_, err = conn.Write([]byte("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"))
				require.NoError(t, err)
				for _, want := range []int{250, 250, 354} {
					code, msg, err := tc.ReadResponse(want)
					require.NoError(t, err, "want %d, got %d %s", want, code, msg)
				}
				_, err = conn.Write([]byte("Subject: pipelined\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
				require.NoError(t, err)
				for _, want := range []int{250, 221} {
					code, msg, err := tc.ReadResponse(want)
					require.NoError(t, err, "want %d, got %d %s", want, code, msg)
				}
				conn.Close()
				waitIdle(t, srv)

				msgs := srv.Messages()
				require.Len(t, msgs, 1)
				assert.Equal(t, "a@b.test", msgs[0].From)
				assert.Equal(t, []string{"c@d.test"}, msgs[0].To)
				assert.Equal(t, "Subject: pipelined\r\n\r\nhi\r\n", string(msgs[0].Data))
				assert.Equal(t, []int{220, 250, 250, 250, 354, 250, 221}, replyCodes(srv.Replies()))
			})
		})
	}
}
