package deliver

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

// mxDial routes host:port to pipe servers by MX host name.
func mxDial(servers map[string]*delivertest.Server) func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
	return func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		srv, ok := servers[host]
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "connection refused", Name: host}}
		}
		return delivertest.Dialer{}.DialSource(ctx, network, srv.Addr(), src)
	}
}

func TestSendThroughMX(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gmail := newPipeServer(t, delivertest.Config{})
		other := newPipeServer(t, delivertest.Config{})
		res := &fakeResolver{
			mx: map[string][]*net.MX{
				"gmail.com":      {{Host: "gmail-smtp-in.l.google.com.", Pref: 5}},
				"acme.example":   {{Host: "aspmx.l.google.com.", Pref: 1}},
				"other.example":  {{Host: "mx.other.example.", Pref: 10}},
				"nullmx.example": {{Host: ".", Pref: 0}},
			},
			tempErr: map[string]bool{"temp.example": true},
		}
		var connects atomic.Int64
		h := newHarness(t, gmail, func(c *Config) {
			c.Routes = nil
			c.Resolver = res
			c.Dial = mxDial(map[string]*delivertest.Server{
				"gmail-smtp-in.l.google.com": gmail,
				"aspmx.l.google.com":         gmail,
				"mx.other.example":           other,
			})
			c.Hooks.Connect = func(ConnectInfo) { connects.Add(1) }
		})
		out, err := h.s.Send(t.Context(), msg("a@gmail.com", "b@other.example", "c@nullmx.example", "d@nowhere.example", "e@temp.example", "f@acme.example"))
		require.NoError(t, err)
		require.Len(t, out, 6)
		assert.Equal(t, Delivered, out[0].Status)
		assert.Equal(t, SiteGoogle, out[0].Site)
		// Either Google MX: connections are shared within the site.
		assert.Contains(t, []string{"gmail-smtp-in.l.google.com", "aspmx.l.google.com"}, out[0].Host)
		assert.Equal(t, Delivered, out[1].Status)
		assert.Equal(t, "other.example", out[1].Site)
		for _, r := range out[2:4] {
			assert.Equal(t, Bounced, r.Status, "%+v", r)
			assert.True(t, r.LocalReply)
			assert.Zero(t, r.Attempts)
			assert.Equal(t, smtpcode.UnknownDomain, r.Class.Category)
		}
		assert.Equal(t, 556, out[2].Reply.Code)
		assert.Equal(t, 550, out[3].Reply.Code)
		assert.Equal(t, Deferred, out[4].Status)
		assert.Equal(t, 451, out[4].Reply.Code)
		assert.True(t, out[4].RetryAt.After(time.Now()))
		assert.Equal(t, Delivered, out[5].Status)
		assert.Equal(t, SiteGoogle, out[5].Site)

		// A Workspace domain reuses the pooled Gmail connection.
		before := connects.Load()
		out, err = h.s.Send(t.Context(), msg("g@acme.example"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, out[0].Status)
		out, err = h.s.Send(t.Context(), msg("h@gmail.com"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, out[0].Status)
		assert.LessOrEqual(t, connects.Load()-before, int64(1))
		h.close()
	})
}

func TestSendSourceIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) {
			c.Dial = delivertest.Dialer{}.DialSource
			c.SourceIP = netip.MustParseAddr("192.0.2.10")
		})
		m := msg("a@example.test")
		_, err := h.s.Send(t.Context(), m)
		require.NoError(t, err)
		m.SourceIP = netip.MustParseAddr("192.0.2.11")
		_, err = h.s.Send(t.Context(), m)
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"192.0.2.10", "192.0.2.11"}, srv.ClientNames())
		h.close()
	})
}

func TestSendGreylisted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Greylist: delivertest.Greylist{Delay: 5 * time.Minute}})
		h := newHarness(t, srv, nil)
		start := time.Now()
		out, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Deferred, out[0].Status)
		assert.Equal(t, smtpcode.Greylist, out[0].Class.Category)
		assert.GreaterOrEqual(t, out[0].RetryAt.Sub(start), 5*time.Minute)
		assert.Equal(t, time.Duration(0), time.Since(start), "no wait within Send")

		time.Sleep(out[0].RetryAt.Sub(time.Now()))
		m := msg("a@example.test")
		m.Attempt, m.FirstAttempt = 1, start
		out, err = h.s.Send(t.Context(), m)
		require.NoError(t, err)
		assert.Equal(t, Delivered, out[0].Status)
		h.close()
	})
}

// A rate limit whose backoff outlasts MaxWait defers at once.
func TestSendRateLimitedDefersAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := delivertest.Gmail()
		cfg.StartTLS = false
		cfg.Limits.MessageRate = delivertest.Rate{Every: time.Hour, Burst: 1, Reply: delivertest.GmailRateReply}
		srv := newPipeServer(t, cfg)
		h := newHarness(t, srv, nil)
		out, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, out[0].Status)
		start := time.Now()
		out, err = h.s.Send(t.Context(), msg("b@example.test"))
		require.NoError(t, err)
		r := out[0]
		assert.Equal(t, Deferred, r.Status, "%+v", r)
		assert.Equal(t, smtpcode.RateLimit, r.Class.Category)
		assert.Equal(t, 1, r.Attempts)
		assert.Less(t, time.Since(start), time.Minute)
		assert.True(t, r.RetryAt.After(start.Add(time.Minute)))
		h.close()
	})
}

func TestSendSmarthostOneTransaction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, func(c *Config) {
			c.Routes = nil
			c.Smarthost = &Smarthost{Addr: srv.Addr()}
		})
		out, err := h.s.Send(t.Context(), msg("a@one.example", "b@two.example", "c@three.example"))
		require.NoError(t, err)
		for _, r := range out {
			assert.Equal(t, Delivered, r.Status)
		}
		assert.Equal(t, 1, srv.MessageCount())
		h.close()
	})
}

func TestSendLogsAndHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Recipients: map[string]delivertest.Reply{
			"nobody@example.test": {Code: 550, Enhanced: "5.1.1", Text: "No such user"},
		}})
		var buf bytes.Buffer
		var mu sync.Mutex
		var events []string
		record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) {
			c.Governor = gov
			c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c.Hooks = Hooks{
				Attempt: func(a AttemptInfo) { record("attempt") },
				Result:  func(r Result) { record("result:" + r.Status.String()) },
				Wait:    func(w WaitInfo) { record("wait") },
				Connect: func(c ConnectInfo) { record("connect") },
			}
		})
		h.gov = gov
		_, err = h.s.Send(t.Context(), msg("a@example.test", "nobody@example.test"))
		require.NoError(t, err)
		assert.Equal(t, []string{"connect", "attempt", "result:delivered", "result:bounced"}, events)
		assert.Contains(t, buf.String(), "deliver: result")
		assert.Contains(t, buf.String(), "rcpt=nobody@example.test status=bounced")
		assert.Contains(t, buf.String(), "deliver: connect")

		// A second Send waits for the only slot, held by a busy connection.
		events = nil
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				_, err := h.s.Send(t.Context(), msg("a@example.test"))
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		h.close()
	})
}

// With Logger nil nothing is logged (and nothing panics).
func TestSendNoLogger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		h := newHarness(t, srv, nil)
		out, err := h.s.Send(t.Context(), msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, out[0].Status)
		h.close()
	})
}

func TestSendTLSHandshakeFailure(t *testing.T) {
	for _, tt := range []struct {
		policy TLSPolicy
		want   Status
		conns  int
	}{
		{TLSOpportunistic, Delivered, 2},            // the retry goes in clear
		{TLSRequired, Deferred, DefaultMaxAttempts}, // each attempt fails the handshake
	} {
		t.Run(tt.policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{StartTLS: true})
				h := newHarness(t, srv, func(c *Config) {
					c.TLS = tt.policy
					c.TLSConfig = &tls.Config{} // system roots: the test certificate fails
				})
				out, err := h.s.Send(t.Context(), msg("a@example.test"))
				require.NoError(t, err)
				assert.Equal(t, tt.want, out[0].Status, "%+v", out[0])
				if tt.want == Deferred {
					assert.ErrorIs(t, out[0].Err, errHandshake)
					assert.Zero(t, srv.MessageCount())
				}
				h.close()
				srv.Close()
				assert.Len(t, srv.Connections(), tt.conns)
			})
		})
	}
}

// A receiver's messages-per-connection cap (421 at MAIL) is no throttle:
// the message goes on a new connection at once, and the cap is learned.
func TestSendLearnsMessagesPerConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Limits: delivertest.Limits{
			MaxMessagesPerConnection: 3,
			MaxMessagesReply:         delivertest.YahooMaxMessagesReply,
		}})
		h := newHarness(t, srv, nil)
		start := time.Now()
		for i := range 10 {
			out, err := h.s.Send(t.Context(), msg(fmt.Sprintf("r%d@example.test", i)))
			require.NoError(t, err)
			require.Equal(t, Delivered, out[0].Status, "%+v", out[0])
			assert.Equal(t, 1, out[0].Attempts)
		}
		assert.Equal(t, time.Duration(0), time.Since(start))
		synctest.Wait() // the receiver records a reply after writing it
		refused := 0
		for _, r := range srv.Replies() {
			if r.Code == 421 {
				refused++
			}
		}
		assert.Equal(t, 1, refused, "refused once, then learned")
		h.close()
		srv.Close()
		assert.Len(t, srv.Connections(), 4)
	})
}

func TestSendBatchesRecipients(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{DiscardData: true})
				h := newHarness(t, srv, mode.apply)
				to := make([]string, 250)
				for i := range to {
					to[i] = fmt.Sprintf("r%d@example.test", i)
				}
				out, err := h.s.Send(t.Context(), msg(to...))
				require.NoError(t, err)
				for _, r := range out {
					require.Equal(t, Delivered, r.Status)
				}
				msgs := srv.Messages()
				require.Len(t, msgs, 3)
				assert.Len(t, msgs[0].To, 100)
				assert.Len(t, msgs[2].To, 50)
				assert.Len(t, srv.Connections(), 1)
				h.close()
			})
		})
	}
}

// A Send waiting for a slot returns when its ctx ends, and so does one
// blocked when Close gives up waiting.
func TestSendCancelledWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Latency: delivertest.Latency{Data: time.Hour}})
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) { c.Governor = gov; c.MaxWait = -1 })
		h.gov = gov
		first := make(chan []Result)
		go func() {
			res, _ := h.s.Send(context.Background(), msg("a@example.test"))
			first <- res
		}()
		time.Sleep(time.Second) // the first Send holds the only slot

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		out, err := h.s.Send(ctx, &Message{From: "a@example.org", To: []string{"b@example.test"}, Body: strings.NewReader("Subject: x\n\nx\n")})
		require.NoError(t, err)
		assert.Equal(t, time.Minute, time.Since(start))
		assert.Equal(t, Deferred, out[0].Status)
		assert.Zero(t, out[0].Attempts, "waiting is not an attempt")
		assert.ErrorIs(t, out[0].Err, context.DeadlineExceeded)

		closeCtx, cancelClose := context.WithTimeout(t.Context(), time.Second)
		defer cancelClose()
		require.ErrorIs(t, h.s.Close(closeCtx), context.DeadlineExceeded)
		res := <-first
		assert.Equal(t, Deferred, res[0].Status)
		assert.True(t, res[0].PossiblyDelivered)
		h.assertNoSlots()
	})
}

// Recipients left for a next transaction by a 452 share the outcome of
// the transaction when Send gives up before that next one.
func TestSendUntriedRecipientsShareTheOutcome(t *testing.T) {
	for _, mode := range pipeliningModes {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{
					Limits: delivertest.Limits{MaxRecipients: 2},
					Faults: []delivertest.Fault{{Step: delivertest.StepDot, Action: delivertest.ActionReply,
						Reply: delivertest.Reply{Code: 421, Enhanced: "4.4.5", Text: "Too many connections"}, Times: 1}},
				})
				h := newHarness(t, srv, func(c *Config) { c.MaxWait = 10 * time.Second; mode.apply(c) })
				out, err := h.s.Send(t.Context(), msg("a@example.test", "b@example.test", "c@example.test", "d@example.test"))
				require.NoError(t, err)
				for _, r := range out {
					assert.Equal(t, Deferred, r.Status, "%+v", r)
					assert.Equal(t, 421, r.Reply.Code, "%+v", r)
				}
				h.close()
			})
		})
	}
}
