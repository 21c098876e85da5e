package deliver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/smtpcode"
)

// pipeliningModes runs a test with PIPELINING used (the default, as
// delivertest offers it) and with Config.DisablePipelining.
var pipeliningModes = []pipeliningMode{
	{"pipelined", false},
	{"lockstep", true},
}

type pipeliningMode struct {
	name    string
	disable bool
}

func (m pipeliningMode) apply(c *Config) { c.DisablePipelining = m.disable }

// countingConn counts the client's writes.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// With PIPELINING a message on a warm connection costs two writes (MAIL,
// RCPT and DATA; then body and dot) whatever its recipients; without, one
// per command and one for the body.
func TestTransactionWrites(t *testing.T) {
	tests := []struct {
		disable      bool // Config.DisablePipelining
		notOffered   bool // the receiver does not offer PIPELINING
		rcpts, wants int
	}{
		{false, false, 1, 2},
		{false, false, 3, 2},
		{true, false, 1, 4},
		{true, false, 3, 6},
		{false, true, 1, 4},
		{false, true, 3, 6},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("disable=%v/offered=%v/rcpts=%d", tt.disable, !tt.notOffered, tt.rcpts), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{NoPipelining: tt.notOffered})
				var conns []*countingConn
				h := newHarness(t, srv, func(c *Config) {
					c.DisablePipelining = tt.disable
					dial := c.Dial
					c.Dial = func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
						conn, err := dial(ctx, network, addr, src)
						if err != nil {
							return nil, err
						}
						cc := &countingConn{Conn: conn}
						conns = append(conns, cc)
						return cc, nil
					}
				})
				to := make([]string, tt.rcpts)
				for i := range to {
					to[i] = fmt.Sprintf("r%d@example.test", i)
				}
				// The first message pays for the connection.
				_, err := h.s.Send(t.Context(), msg(to...))
				require.NoError(t, err)
				require.Len(t, conns, 1)
				before := conns[0].count()
				res, err := h.s.Send(t.Context(), msg(to...))
				require.NoError(t, err)
				for _, r := range res {
					require.Equal(t, Delivered, r.Status, "%+v", r)
				}
				assert.Equal(t, tt.wants, conns[0].count()-before)
				assert.Len(t, conns, 1)
				h.close()
			})
		})
	}
}

// Many long recipients go out in several bounded groups over net.Pipe
// (no buffer: an unbounded group would deadlock with the receiver), and
// each recipient gets its own reply.
func TestTransactionPipelinedGroups(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				long := strings.Repeat("x", 60)
				refused := map[string]delivertest.Reply{}
				to := make([]string, 90)
				for i := range to {
					to[i] = fmt.Sprintf("%s%d@example.test", long, i)
					if i%7 == 3 {
						refused[to[i]] = delivertest.Reply{Code: 550, Enhanced: "5.1.1", Text: "No such user"}
					}
				}
				srv := newPipeServer(t, delivertest.Config{Recipients: refused, DiscardData: true})
				h := newHarness(t, srv, mode.apply)
				res, err := h.s.Send(t.Context(), msg(to...))
				require.NoError(t, err)
				delivered := 0
				for i, r := range res {
					if _, bad := refused[to[i]]; bad {
						assert.Equal(t, Bounced, r.Status, "%+v", r)
						assert.Equal(t, 550, r.Reply.Code)
						continue
					}
					assert.Equal(t, Delivered, r.Status, "%+v", r)
					delivered++
				}
				msgs := srv.Messages()
				require.Len(t, msgs, 1)
				assert.Len(t, msgs[0].To, delivered)
				h.close()
			})
		})
	}
}

// A refused MAIL in a pipelined group: the RCPT and DATA replies that
// follow are read, and the connection carries the next message.
func TestTransactionMailRefusedKeepsConnection(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{{
					Step: delivertest.StepMail, Action: delivertest.ActionReply, Times: 1,
					Reply: delivertest.Reply{Code: 550, Enhanced: "5.7.1", Text: "Sender refused"},
				}}})
				h := newHarness(t, srv, mode.apply)
				res, err := h.s.Send(t.Context(), msg("a@example.test", "b@example.test"))
				require.NoError(t, err)
				for _, r := range res {
					assert.Equal(t, Bounced, r.Status, "%+v", r)
					assert.Equal(t, 550, r.Reply.Code)
				}
				res, err = h.s.Send(t.Context(), msg("a@example.test"))
				require.NoError(t, err)
				assert.Equal(t, Delivered, res[0].Status, "%+v", res[0])
				assert.Len(t, srv.Connections(), 1)
				assert.Equal(t, 1, srv.MessageCount())
				h.close()
			})
		})
	}
}

// The reply error is a go-smtp *smtp.SMTPError, as Result.Err documents,
// and the reply keeps its enhanced code and every line.
func TestTransactionReplyError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Recipients: map[string]delivertest.Reply{
			"full@example.test": {Code: 452, Enhanced: "4.2.2", Text: "Mailbox full\nTry later"},
		}})
		h := newHarness(t, srv, nil)
		res, err := h.s.Send(t.Context(), msg("full@example.test"))
		require.NoError(t, err)
		r := res[0]
		assert.Equal(t, Deferred, r.Status)
		assert.Equal(t, 452, r.Reply.Code)
		assert.Equal(t, "4.2.2", r.Reply.Enhanced.String())
		assert.Equal(t, "Mailbox full\nTry later", r.Reply.Text)
		var se *smtp.SMTPError
		require.ErrorAs(t, r.Err, &se)
		assert.Equal(t, 452, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 2, 2}, se.EnhancedCode)
		h.close()
	})
}

func TestAppendDotStuffed(t *testing.T) {
	tests := []struct {
		in        string
		lineStart bool
		want      string
		wantStart bool
	}{
		{"", true, "", true},
		{".", true, "..", false},
		{".", false, ".", false},
		{"a\r\n", true, "a\r\n", true},
		{".a\r\n.\r\nb.\r\n..\r\n", true, "..a\r\n..\r\nb.\r\n...\r\n", true},
		{"\n.x", false, "\n..x", false},
		{"x.\r\n", true, "x.\r\n", true},
	}
	for _, tt := range tests {
		got, start := appendDotStuffed(nil, []byte(tt.in), tt.lineStart)
		assert.Equal(t, tt.want, string(got), "%q", tt.in)
		assert.Equal(t, tt.wantStart, start, "%q", tt.in)
	}
}

// recordConn records what is written to it; deadlines are no-ops.
type recordConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// writeBody writes what net/textproto's DotWriter writes, also across the
// bodyBlock boundaries.
func TestWriteBodyMatchesDotWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{".", "..", "a", "\r\n", ".\r\n", "0123456789", "\r\n.", "x.y"}
	inputs := []string{"x", "x\r\n", ".", ".\r\n", "\r\n.\r\n"}
	for range 200 {
		var b strings.Builder
		n := rng.IntN(40)
		if rng.IntN(10) == 0 {
			n = 2*bodyBlock/3 + rng.IntN(bodyBlock) // crosses a block boundary
		}
		for b.Len() < n || b.Len() == 0 {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		inputs = append(inputs, b.String())
	}
	// A dot right at a block boundary, after a line end.
	inputs = append(inputs, strings.Repeat("a", bodyBlock-2)+"\r\n.b\r\n", strings.Repeat("a", bodyBlock-1)+"\r\n.b")
	for _, in := range inputs {
		data := NormalizeCRLF([]byte(in))
		var want bytes.Buffer
		dw := textproto.NewWriter(bufio.NewWriter(&want)).DotWriter()
		_, err := dw.Write(data)
		require.NoError(t, err)
		require.NoError(t, dw.Close())

		rc := &recordConn{}
		ss := &session{track: &trackConn{Conn: rc}}
		require.NoError(t, ss.writeBody(data, time.Minute))
		require.Equal(t, want.String(), rc.buf.String(), "input %q", in[:min(len(in), 80)])
		assert.True(t, ss.track.wroteFinalDot())
	}
}

func readerSession(wire string) *session {
	rc := &recordConn{}
	return &session{s: &Sender{}, track: &trackConn{Conn: rc}, br: bufio.NewReader(strings.NewReader(wire))}
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		wire    string
		code    int
		raw     string
		wantErr string // "" none; else a substring
	}{
		{"250 2.0.0 Ok\r\n", 250, "250 2.0.0 Ok\r\n", ""},
		{"250\r\n", 250, "250\r\n", ""},
		{"250 Ok\n", 250, "250 Ok\n", ""},
		{"452-4.2.2 Mailbox full\r\n452 4.2.2 Try later\r\n250 next\r\n", 452, "452-4.2.2 Mailbox full\r\n452 4.2.2 Try later\r\n", ""},
		{"hello\r\n", 0, "", "malformed reply line"},
		{"250Ok\r\n", 0, "", "malformed reply line"},
		{"25\r\n", 0, "", "malformed reply line"},
		{"650 no\r\n", 0, "", "malformed reply line"},
		{"250-a\r\n550 b\r\n", 0, "", "different codes"},
		{"250-a\r\n", 0, "", "EOF"},
		{"", 0, "", "EOF"},
		{"250 " + strings.Repeat("x", 5000) + "\r\n", 250, "250 " + strings.Repeat("x", 5000) + "\r\n", ""},
		{"250 " + strings.Repeat("x", maxReplyBytes) + "\r\n", 0, "", "longer than"},
		{strings.Repeat("250-x\r\n", maxReplyLines) + "250 x\r\n", 0, "", "too long"},
	}
	for _, tt := range tests {
		ss := readerSession(tt.wire)
		code, raw, err := ss.readReply(time.Minute)
		name := tt.wire[:min(len(tt.wire), 30)]
		if tt.wantErr != "" {
			require.Error(t, err, "%q", name)
			assert.Contains(t, err.Error(), tt.wantErr, "%q", name)
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				var pe textproto.ProtocolError
				assert.ErrorAs(t, err, &pe, "%q", name)
			}
			continue
		}
		require.NoError(t, err, "%q", name)
		assert.Equal(t, tt.code, code, "%q", name)
		assert.Equal(t, tt.raw, string(raw), "%q", name)
	}
}

func TestSkipReplies(t *testing.T) {
	tests := []struct {
		wire   string
		n      int
		broken bool
	}{
		{"503 5.5.1 Bad sequence\r\n503 5.5.1 Bad sequence\r\n", 2, false},
		{"503 5.5.1 Bad sequence\r\n354 Go ahead\r\n", 2, true}, // now in DATA: unusable
		{"503 5.5.1 Bad sequence\r\n", 2, true},                 // EOF
		{"garbage\r\n", 1, true},
	}
	for _, tt := range tests {
		ss := readerSession(tt.wire)
		ss.skipReplies(tt.n, time.Minute)
		assert.Equal(t, tt.broken, ss.broken, "%q", tt.wire)
	}
}

// FuzzReadReply: any bytes give a reply or an error, never a panic; a
// reply's code is 200-599 and its text ends a line.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 Ok\r\n", "452-a\r\n452 b\r\n", "250", "hello\r\n", "250-x\n250 y\n", "\r\n", "2500\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, wire string) {
		ss := readerSession(wire)
		for range 4 {
			code, raw, err := ss.readReply(time.Minute)
			if err != nil {
				return
			}
			if code < 200 || code > 599 || len(raw) == 0 || raw[len(raw)-1] != '\n' {
				t.Fatalf("code %d raw %q from %q", code, raw, wire)
			}
			o := ss.replyOutcome(code, raw)
			if o.reply.Code != code {
				t.Fatalf("outcome code %d, read %d from %q", o.reply.Code, code, wire)
			}
		}
	})
}

// A delivered recipient's Class is smtpcode's for a 2xx reply, as
// Result.Class documents (not the zero Classification, which reads
// "permanent other"); so is the Attempt hook's.
func TestDeliveredClass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		var attempt AttemptInfo
		h := newHarness(t, srv, func(c *Config) { c.Hooks.Attempt = func(a AttemptInfo) { attempt = a } })
		res, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		require.Equal(t, Delivered, res[0].Status)
		want := smtpcode.Classify(smtpcode.Reply{Code: 250})
		assert.Equal(t, want, res[0].Class)
		assert.Equal(t, smtpcode.RuleSuccess, res[0].Class.Rule)
		assert.Equal(t, want, attempt.Class)
		h.close()
	})
}
