package deliver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pipeDial dials delivertest pipe servers by address, as the source IP
// (the receiver's client identity).
func pipeDial(dials *atomic.Int64) func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
	return func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		id := delivertest.DefaultIdentity
		if src.IsValid() {
			id = src.String()
		}
		return delivertest.Dialer{Identity: id}.DialContext(ctx, network, addr)
	}
}

type harness struct {
	t     *testing.T
	s     *Sender
	gov   *governor.Governor
	dials atomic.Int64
}

// newHarness returns a Sender routing "example.test" (and every domain
// listed in extra) to srv over pipes, with TLS off unless cfg says otherwise.
func newHarness(t *testing.T, srv *delivertest.Server, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t}
	var err error
	h.gov, err = governor.New(governor.Config{Policy: DefaultPolicy()})
	require.NoError(t, err)
	cfg := Config{
		HelloName: "sender.example.org",
		Routes:    map[string][]string{"*": {srv.Addr()}},
		Dial:      pipeDial(&h.dials),
		TLS:       TLSNone,
		Governor:  h.gov,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.s, err = New(cfg)
	require.NoError(t, err)
	return h
}

// close closes the sender and checks that no slot is held.
func (h *harness) close() {
	h.t.Helper()
	require.NoError(h.t, h.s.Close(context.Background()))
	h.assertNoSlots()
}

func (h *harness) assertNoSlots() {
	h.t.Helper()
	states, err := h.gov.Snapshot()
	require.NoError(h.t, err)
	for _, ks := range states {
		assert.Zero(h.t, ks.InFlight, "slots held on %s", ks.Key)
	}
}

func msg(to ...string) *Message {
	return &Message{
		From: "sender@example.org",
		To:   to,
		Data: []byte("From: sender@example.org\nSubject: test\n\nHello.\n.\nBye.\n"),
	}
}

func newPipeServer(t *testing.T, cfg delivertest.Config) *delivertest.Server {
	t.Helper()
	srv, err := delivertest.NewPipeServer(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestSendDelivers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		res, err := h.s.Send(t.Context(), msg("a@example.test", "b@example.test", "a@example.test"))
		require.NoError(t, err)
		require.Len(t, res, 3)
		for _, r := range res {
			assert.Equal(t, Delivered, r.Status, "%+v", r)
			assert.Equal(t, 250, r.Reply.Code)
			assert.NotEmpty(t, r.Reply.Text, "the receiver's text (queue ID) is kept")
			assert.Equal(t, 1, r.Attempts)
		}
		assert.Equal(t, "a@example.test", res[2].Recipient)
		msgs := srv.Messages()
		require.Len(t, msgs, 1)
		assert.Equal(t, []string{"a@example.test", "b@example.test"}, msgs[0].To)
		// Bare LFs went out as CRLF, the lone dot was stuffed and unstuffed.
		assert.Equal(t, "From: sender@example.org\r\nSubject: test\r\n\r\nHello.\r\n.\r\nBye.\r\n", string(msgs[0].Data))

		// The connection is reused by the next message: no RSET, no new dial.
		res, err = h.s.Send(t.Context(), msg("c@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, res[0].Status)
		assert.Len(t, srv.Connections(), 1)
		assert.Equal(t, int64(1), h.dials.Load())
		h.close()
		srv.Close()
		conns := srv.Connections()
		require.Len(t, conns, 1)
		assert.Equal(t, 2, conns[0].Messages)
	})
}

func TestSendRefusesBadInputBeforeDialling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) { c.MaxMessageBytes = 100 })
		defer h.close()
		tests := []struct {
			name string
			m    *Message
			want error
		}{
			{"nil", nil, ErrInvalidMessage},
			{"no rcpt", msg(), ErrNoRecipients},
			{"smuggled rcpt", msg("a@example.test>\r\nRCPT TO:<b@example.test"), ErrInvalidAddress},
			{"bad from", &Message{From: "x", To: []string{"a@example.test"}, Data: []byte("x")}, ErrInvalidAddress},
			{"empty", &Message{To: []string{"a@example.test"}}, ErrInvalidMessage},
			{"too big", &Message{To: []string{"a@example.test"}, Data: []byte(strings.Repeat("x", 101))}, ErrMessageTooLarge},
		}
		for _, tt := range tests {
			res, err := h.s.Send(t.Context(), tt.m)
			assert.ErrorIs(t, err, tt.want, tt.name)
			assert.Nil(t, res, tt.name)
		}
		assert.Zero(t, h.dials.Load())
		assert.Empty(t, srv.Connections())
	})
}

func TestSendAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		h.close()
		_, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.ErrorIs(t, err, ErrClosed)
		require.NoError(t, h.s.Close(t.Context()))
	})
}

// Every receiver fault leads to exactly one outcome per recipient, no
// leaked slot, connection or goroutine.
func TestSendReceiverFaults(t *testing.T) {
	type want struct {
		status   Status
		possibly bool
	}
	reply := func(code int, enh, text string) delivertest.Reply {
		return delivertest.Reply{Code: code, Enhanced: enh, Text: text}
	}
	tests := []struct {
		name  string
		fault delivertest.Fault
		want  want
	}{
		{"connect 421", delivertest.Fault{Step: delivertest.StepConnect, Action: delivertest.ActionReply, Reply: reply(421, "4.3.2", "Not now")}, want{status: Deferred}},
		{"connect 554", delivertest.Fault{Step: delivertest.StepConnect, Action: delivertest.ActionReply, Reply: reply(554, "5.7.1", "No SMTP service here")}, want{status: Bounced}},
		{"connect drop", delivertest.Fault{Step: delivertest.StepConnect, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"connect hang", delivertest.Fault{Step: delivertest.StepConnect, Action: delivertest.ActionHang}, want{status: Deferred}},
		{"connect garbage", delivertest.Fault{Step: delivertest.StepConnect, Action: delivertest.ActionGarbage}, want{status: Deferred}},
		{"hello drop", delivertest.Fault{Step: delivertest.StepHello, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"hello hang", delivertest.Fault{Step: delivertest.StepHello, Action: delivertest.ActionHang}, want{status: Deferred}},
		{"hello garbage", delivertest.Fault{Step: delivertest.StepHello, Action: delivertest.ActionGarbage}, want{status: Deferred}},
		{"mail 451", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionReply, Reply: reply(451, "4.3.0", "Local error")}, want{status: Deferred}},
		{"mail 550", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionReply, Reply: reply(550, "5.7.1", "Sender rejected")}, want{status: Bounced}},
		{"mail 421", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionReply, Reply: reply(421, "4.4.2", "Closing")}, want{status: Deferred}},
		{"mail drop", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"mail hang", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionHang}, want{status: Deferred}},
		{"mail garbage", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionGarbage}, want{status: Deferred}},
		{"rcpt 550", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionReply, Reply: reply(550, "5.1.1", "No such user")}, want{status: Bounced}},
		{"rcpt 450", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionReply, Reply: reply(450, "4.2.1", "Receiving mail at a rate that prevents additional messages")}, want{status: Deferred}},
		{"rcpt drop", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"rcpt hang", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionHang}, want{status: Deferred}},
		{"data 554", delivertest.Fault{Step: delivertest.StepData, Action: delivertest.ActionReply, Reply: reply(554, "5.6.0", "Bad content")}, want{status: Bounced}},
		{"data drop", delivertest.Fault{Step: delivertest.StepData, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"data hang", delivertest.Fault{Step: delivertest.StepData, Action: delivertest.ActionHang}, want{status: Deferred, possibly: true}},
		{"body drop", delivertest.Fault{Step: delivertest.StepBody, Action: delivertest.ActionDrop}, want{status: Deferred}},
		{"body hang", delivertest.Fault{Step: delivertest.StepBody, Action: delivertest.ActionHang}, want{status: Deferred, possibly: true}},
		{"dot drop", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionDrop}, want{status: Deferred, possibly: true}},
		{"dot hang", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionHang}, want{status: Deferred, possibly: true}},
		// A garbled reply to the final dot leaves the outcome unknown too.
		{"dot garbage", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionGarbage}, want{status: Deferred, possibly: true}},
		{"dot 451", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionReply, Reply: reply(451, "4.3.0", "Try later")}, want{status: Deferred}},
		{"dot 550", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionReply, Reply: reply(550, "5.7.1", "Spam")}, want{status: Bounced}},
	}
	for _, mode := range pipeliningModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					srv := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{tt.fault}})
					var hookResults atomic.Int64
					h := newHarness(t, srv, func(c *Config) {
						c.DisablePipelining = mode.disable
						c.Hooks.Result = func(Result) { hookResults.Add(1) }
					})
					start := time.Now()
					// A body larger than the pipe's buffers, so that a fault in
					// the body stops the writes before the final dot.
					m := msg("a@example.test", "b@example.test")
					m.Data = []byte("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 4096))
					res, err := h.s.Send(t.Context(), m)
					require.NoError(t, err)
					require.Len(t, res, 2)
					for _, r := range res {
						assert.Equal(t, tt.want.status, r.Status, "%+v", r)
						assert.Equal(t, tt.want.possibly, r.PossiblyDelivered, "%+v", r)
						assert.NotZero(t, r.Attempts)
						if r.Status == Deferred {
							assert.False(t, r.RetryAt.Before(start), "retry at %v", r.RetryAt)
							assert.NotNil(t, r.Err)
						}
						if r.Status == Bounced {
							assert.NotNil(t, r.Err)
							assert.False(t, r.Class.Transient)
						}
					}
					assert.Equal(t, int64(2), hookResults.Load())
					h.close()
				})
			})
		}
	}
}

func TestSendNextMXOnGreetingRefusal(t *testing.T) {
	for _, reply := range []delivertest.Reply{
		{Code: 421, Enhanced: "4.3.2", Text: "System not accepting network messages"},
		{Code: 554, Enhanced: "5.3.2", Text: "No SMTP service here"},
	} {
		t.Run(reply.String(), func(t *testing.T) { testNextMX(t, reply) })
	}
}

func testNextMX(t *testing.T, reply delivertest.Reply) {
	synctest.Test(t, func(t *testing.T) {
		bad := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{{Step: delivertest.StepConnect, Action: delivertest.ActionReply,
			Reply: reply}}})
		good := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, good, func(c *Config) {
			c.Routes = map[string][]string{"example.test": {bad.Addr(), good.Addr()}}
		})
		res, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, res[0].Status, "%+v", res[0])
		assert.Equal(t, strings.Split(good.Addr(), ":")[0], res[0].Host)
		assert.Len(t, bad.Connections(), 1)
		assert.Equal(t, 1, good.MessageCount())
		h.close()
	})
}

func TestSendTLSRequiredWithoutSTARTTLS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) { c.TLS = TLSRequired })
		res, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		r := res[0]
		assert.Equal(t, Deferred, r.Status, "%+v", r)
		assert.True(t, r.LocalReply)
		assert.Equal(t, 454, r.Reply.Code)
		assert.Equal(t, smtpcode.TLS, r.Class.Category)
		assert.ErrorIs(t, r.Err, errTLSUnavailable)
		assert.Zero(t, srv.MessageCount())
		synctest.Wait()
		for _, rep := range srv.Replies() {
			assert.NotEqual(t, 354, rep.Code, "DATA must never start")
		}
		h.close()
	})
}

func TestSendTLS(t *testing.T) {
	for _, policy := range []TLSPolicy{TLSOpportunistic, TLSRequired} {
		t.Run(policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{StartTLS: true})
				var tlsConns atomic.Int64
				h := newHarness(t, srv, func(c *Config) {
					c.TLS = policy
					c.TLSConfig = srv.ClientTLSConfig()
					c.Hooks.Connect = func(ci ConnectInfo) {
						if ci.TLS {
							tlsConns.Add(1)
						}
					}
				})
				res, err := h.s.Send(t.Context(), msg("a@example.test"))
				require.NoError(t, err)
				assert.Equal(t, Delivered, res[0].Status, "%+v", res[0])
				assert.Equal(t, int64(1), tlsConns.Load())
				h.close()
				srv.Close()
				require.Len(t, srv.Connections(), 1)
				assert.True(t, srv.Connections()[0].TLS)
			})
		})
	}
}

// countConn counts the commands written that start with a prefix.
type countConn struct {
	net.Conn
	prefix string
	n      *atomic.Int64
}

func (c *countConn) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.HasPrefix(line, c.prefix) {
			c.n.Add(1)
		}
	}
	return c.Conn.Write(b)
}

func TestSendOpportunisticWithoutSTARTTLS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		var ehlos atomic.Int64
		h := newHarness(t, srv, func(c *Config) {
			c.TLS = TLSOpportunistic
			dial := pipeDial(nil)
			c.Dial = func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
				conn, err := dial(ctx, network, addr, src)
				return &countConn{Conn: conn, prefix: "EHLO ", n: &ehlos}, err
			}
		})
		res, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, res[0].Status, "%+v", res[0])
		assert.Equal(t, int64(1), ehlos.Load(), "one EHLO: its reply is replayed to go-smtp")
		h.close()
	})
}

// stallConn blocks writes that carry the marker until the conn is closed.
type stallConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *stallConn) Write(b []byte) (int, error) {
	if strings.Contains(string(b), "STALL") {
		<-c.closed
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestSendContextCancelMidData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) {
			dial := pipeDial(nil)
			c.Dial = func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
				conn, err := dial(ctx, network, addr, src)
				if err != nil {
					return nil, err
				}
				return &stallConn{Conn: conn, closed: make(chan struct{})}, nil
			}
		})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		m := msg("a@example.test")
		m.Data = []byte("Subject: x\r\n\r\nSTALL\r\n")
		start := time.Now()
		res, err := h.s.Send(ctx, m)
		require.NoError(t, err)
		assert.Equal(t, time.Minute, time.Since(start), "returns as soon as ctx ends")
		r := res[0]
		assert.Equal(t, Deferred, r.Status)
		assert.False(t, r.PossiblyDelivered)
		assert.ErrorIs(t, r.Err, context.DeadlineExceeded)
		assert.Zero(t, srv.MessageCount())
		h.close()
	})
}

func TestSendTooManyRecipients(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{Limits: delivertest.Limits{MaxRecipients: 2}})
				h := newHarness(t, srv, mode.apply)
				res, err := h.s.Send(t.Context(), msg("a@example.test", "b@example.test", "c@example.test", "d@example.test", "e@example.test"))
				require.NoError(t, err)
				for _, r := range res {
					assert.Equal(t, Delivered, r.Status, "%+v", r)
				}
				assert.Equal(t, 3, srv.MessageCount())
				assert.Len(t, srv.Connections(), 1)
				h.close()
			})
		})
	}
}

func TestSendResetAfterFailedTransaction(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{Recipients: map[string]delivertest.Reply{
					"nobody@example.test": {Code: 550, Enhanced: "5.1.1", Text: "No such user"},
				}})
				h := newHarness(t, srv, mode.apply)
				res, err := h.s.Send(t.Context(), msg("nobody@example.test"))
				require.NoError(t, err)
				assert.Equal(t, Bounced, res[0].Status)
				assert.Equal(t, smtpcode.UnknownUser, res[0].Class.Category)
				assert.Equal(t, 550, res[0].Reply.Code)

				// Mixed: one bounces, one is delivered; same connection after RSET.
				res, err = h.s.Send(t.Context(), msg("nobody@example.test", "a@example.test"))
				require.NoError(t, err)
				assert.Equal(t, Bounced, res[0].Status)
				assert.Equal(t, Delivered, res[1].Status)
				assert.Len(t, srv.Connections(), 1)
				assert.Equal(t, 1, srv.MessageCount())
				h.close()
			})
		})
	}
}

func TestSendMaxMessagesPerConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) { c.MaxMessagesPerConn = 3 })
		for i := range 7 {
			res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("r%d@example.test", i)))
			require.NoError(t, err)
			require.Equal(t, Delivered, res[0].Status)
		}
		assert.Len(t, srv.Connections(), 3)
		h.close()
	})
}

func TestSendIdleTimeoutClosesPooledConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		_, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		time.Sleep(DefaultIdleTimeout + time.Second)
		synctest.Wait()
		conns := srv.Connections()
		require.Len(t, conns, 1)
		assert.False(t, conns[0].Open())
		h.assertNoSlots()
		h.close()
	})
}

// A Gmail-like receiver capped at 2 connections per IP, hammered by 20
// goroutines, never sees more than 2 with the default policy.
func TestSendGmailLikeCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := delivertest.Gmail()
		cfg.StartTLS = false
		cfg.Limits.MessageRate = delivertest.Rate{}
		cfg.Latency = delivertest.EveryCommand(50 * time.Millisecond)
		srv := newPipeServer(t, cfg)
		h := newHarness(t, srv, func(c *Config) {
			c.SiteKey = func(string, []string) string { return SiteGoogle }
		})
		var wg sync.WaitGroup
		var delivered atomic.Int64
		for g := range 20 {
			wg.Go(func() {
				for i := range 5 {
					res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("u%d.%d@gmail.test", g, i)))
					if assert.NoError(t, err) && res[0].Status == Delivered {
						delivered.Add(1)
					}
				}
			})
		}
		wg.Wait()
		synctest.Wait() // let the receiver finish its record
		assert.Equal(t, int64(100), delivered.Load())
		assert.LessOrEqual(t, srv.MaxConcurrency(delivertest.DefaultIdentity), 2)
		assert.Zero(t, srv.Throttled(delivertest.DefaultIdentity))
		h.close()
	})
}

// With a policy that allows 10, the receiver's 421 4.4.5 teaches the
// governor; every message still ends up delivered within Send.
func TestSendGmailLikeCapLearns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := delivertest.Gmail()
		cfg.StartTLS = false
		cfg.Limits.MessageRate = delivertest.Rate{}
		cfg.Latency = delivertest.EveryCommand(50 * time.Millisecond)
		srv := newPipeServer(t, cfg)
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 10}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) {
			c.Governor = gov
			c.SiteKey = func(string, []string) string { return SiteGoogle }
			c.MaxWait = 10 * time.Minute
		})
		h.gov = gov
		var wg sync.WaitGroup
		var delivered atomic.Int64
		for g := range 10 {
			wg.Go(func() {
				for i := range 10 {
					res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("u%d.%d@gmail.test", g, i)))
					if assert.NoError(t, err) && res[0].Status == Delivered {
						delivered.Add(1)
					}
				}
			})
		}
		wg.Wait()
		synctest.Wait() // let the receiver finish its record
		assert.Equal(t, int64(100), delivered.Load())
		first, ok := srv.FirstReply(delivertest.CauseConcurrency)
		require.True(t, ok, "the receiver refused at least once")
		after := srv.MaxConcurrencyAfter(delivertest.DefaultIdentity, first)
		t.Logf("throttled %d times; max concurrency %d overall, %d after the first refusal",
			srv.Throttled(delivertest.DefaultIdentity), srv.MaxConcurrency(delivertest.DefaultIdentity), after)
		assert.LessOrEqual(t, after, 2)
		h.close()
	})
}

func TestCloseWaitsForInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Latency: delivertest.Latency{Data: time.Minute}})
		h := newHarness(t, srv, nil)
		done := make(chan []Result)
		go func() {
			res, _ := h.s.Send(context.Background(), msg("a@example.test"))
			done <- res
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		require.NoError(t, h.s.Close(context.Background()))
		res := <-done
		assert.Equal(t, Delivered, res[0].Status)
		h.assertNoSlots()
	})
}

func TestCloseCancelsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Latency: delivertest.Latency{Data: time.Hour}})
		h := newHarness(t, srv, nil)
		done := make(chan []Result)
		go func() {
			res, _ := h.s.Send(context.Background(), msg("a@example.test"))
			done <- res
		}()
		time.Sleep(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := h.s.Close(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		res := <-done
		assert.Equal(t, Deferred, res[0].Status)
		assert.True(t, res[0].PossiblyDelivered)
		h.assertNoSlots()
	})
}

func TestSendGovernorWaitDefers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		require.NoError(t, h.gov.Suspend("ip:any|site:delivertest.invalid", time.Now().Add(time.Hour), "test"))
		start := time.Now()
		res, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		r := res[0]
		assert.Equal(t, Deferred, r.Status, "%+v", r)
		assert.Zero(t, r.Attempts)
		var we *governor.WaitError
		assert.ErrorAs(t, r.Err, &we)
		assert.Equal(t, start.Add(time.Hour), r.RetryAt)
		assert.Zero(t, h.dials.Load())
		h.close()
	})
}

func TestSendCallerKeyQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		pol := DefaultPolicy()
		pol.Patterns = append([]governor.Pattern{{Match: "mailbox:*", Limits: governor.Limits{Quota: governor.PerDay(2, time.UTC)}}}, pol.Patterns...)
		gov, err := governor.New(governor.Config{Policy: pol})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) { c.Governor = gov })
		h.gov = gov
		var statuses []Status
		for range 3 {
			m := msg("a@example.test")
			m.Keys = []string{"mailbox:sender@example.org"}
			res, err := h.s.Send(t.Context(), m)
			require.NoError(t, err)
			statuses = append(statuses, res[0].Status)
		}
		assert.Equal(t, []Status{Delivered, Delivered, Deferred}, statuses)
		assert.Equal(t, 2, srv.MessageCount())
		h.close()
	})
}

// A message that is not sent (every recipient Deferred) gives its unit on
// Message.Keys back, so that its retry does not count twice; one that
// reached a final answer (delivered, bounced) or may have been delivered
// keeps it.
func TestSendCallerKeyGivenBackWhenNotSent(t *testing.T) {
	reply := func(code int, enh, text string) delivertest.Reply {
		return delivertest.Reply{Code: code, Enhanced: enh, Text: text}
	}
	tests := []struct {
		name      string
		fault     delivertest.Fault // on the first message only
		first     Status
		possibly  bool
		givenBack bool
	}{
		{"deferred at MAIL", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionReply, Reply: reply(451, "4.3.0", "Try later")}, Deferred, false, true},
		{"deferred at RCPT", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionReply, Reply: reply(450, "4.2.1", "Slow down")}, Deferred, false, true},
		{"deferred after the dot", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionReply, Reply: reply(451, "4.3.0", "Try later")}, Deferred, false, true},
		{"bounced", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionReply, Reply: reply(550, "5.1.1", "No such user")}, Bounced, false, false},
		{"possibly delivered", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionDrop}, Deferred, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fault := tt.fault
				fault.Times = 1
				srv := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{fault}})
				pol := DefaultPolicy()
				pol.Patterns = append([]governor.Pattern{{Match: "mailbox:*", Limits: governor.Limits{Quota: governor.PerDay(1, time.UTC)}}}, pol.Patterns...)
				gov, err := governor.New(governor.Config{Policy: pol})
				require.NoError(t, err)
				h := newHarness(t, srv, func(c *Config) { c.Governor = gov; c.MaxAttempts = 1 })
				h.gov = gov
				send := func() Result {
					m := msg("a@example.test")
					m.Keys = []string{"mailbox:sender@example.org"}
					res, err := h.s.Send(t.Context(), m)
					require.NoError(t, err)
					return res[0]
				}
				r := send()
				require.Equal(t, tt.first, r.Status, "%+v", r)
				require.Equal(t, tt.possibly, r.PossiblyDelivered)
				require.NotZero(t, r.Attempts)

				// The retry: sent if the unit came back, held by the quota if not.
				r = send()
				if tt.givenBack {
					assert.Equal(t, Delivered, r.Status, "%+v", r)
				} else {
					assert.Equal(t, Deferred, r.Status, "%+v", r)
					assert.Zero(t, r.Attempts, "held by the quota, not attempted")
					var we *governor.WaitError
					assert.ErrorAs(t, r.Err, &we)
				}
				// Either way the day's one unit is spent now.
				r = send()
				assert.Equal(t, Deferred, r.Status)
				assert.Zero(t, r.Attempts)
				h.close()
			})
		})
	}
}

func TestSendSMTPUTF8NotSupported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		res, err := h.s.Send(t.Context(), msg("δοκιμή@example.test"))
		require.NoError(t, err)
		// go-smtp's server announces SMTPUTF8 only when enabled; either way
		// there is one outcome.
		require.Len(t, res, 1)
		if res[0].Status != Delivered {
			assert.Equal(t, Bounced, res[0].Status)
			assert.Equal(t, 553, res[0].Reply.Code)
			assert.True(t, res[0].LocalReply)
		}
		h.close()
	})
}

func TestNewConfigErrors(t *testing.T) {
	_, err := New(Config{HelloName: "bad name"})
	require.Error(t, err)
	_, err = New(Config{HelloName: "ok.example", TLS: 9})
	require.Error(t, err)
	_, err = New(Config{HelloName: "ok.example", Smarthost: &Smarthost{}})
	require.Error(t, err)
	_, err = New(Config{HelloName: "ok.example", Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: -1}}})
	require.ErrorIs(t, err, governor.ErrInvalidPolicy)
	_ = errors.New
}

func TestSendSmarthostAuth(t *testing.T) {
	plain := func(user, pass string) func() sasl.Client {
		return func() sasl.Client { return sasl.NewPlainClient("", user, pass) }
	}
	tests := []struct {
		name     string
		startTLS bool
		sh       Smarthost
		want     Status
		code     int
	}{
		{"tls", true, Smarthost{Auth: plain("alice", "secret")}, Delivered, 250},
		{"no tls refused", false, Smarthost{Auth: plain("alice", "secret")}, Deferred, 454},
		{"no tls allowed", false, Smarthost{Auth: plain("alice", "secret"), AllowInsecureAuth: true}, Delivered, 250},
		{"bad password", true, Smarthost{Auth: plain("alice", "wrong")}, Bounced, 535},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{StartTLS: tt.startTLS, Users: map[string]string{"alice": "secret"}})
				h := newHarness(t, srv, func(c *Config) {
					c.Routes = nil
					sh := tt.sh
					sh.Addr = srv.Addr()
					c.Smarthost = &sh
					c.TLS = TLSOpportunistic
					c.TLSConfig = srv.ClientTLSConfig()
				})
				res, err := h.s.Send(t.Context(), msg("a@example.test", "b@elsewhere.test"))
				require.NoError(t, err)
				for _, r := range res {
					assert.Equal(t, tt.want, r.Status, "%+v", r)
					assert.Equal(t, tt.code, r.Reply.Code, "%+v", r)
				}
				h.close()
				if tt.want == Delivered {
					srv.Close()
					assert.Equal(t, "alice", srv.Connections()[0].User)
				}
			})
		})
	}
}
