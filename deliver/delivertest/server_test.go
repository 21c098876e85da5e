package delivertest

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestZeroConfigAcceptsEverything(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{})
		defer srv.Close()

		c := dial(t, srv, h.ids[0])
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@example.com", "c@example.net"}, body))
		require.NoError(t, c.Quit())
		waitIdle(t, srv)

		msgs := srv.Messages()
		require.Len(t, msgs, 1)
		assert.Equal(t, "a@example.org", msgs[0].From)
		assert.Equal(t, []string{"b@example.com", "c@example.net"}, msgs[0].To)
		assert.Equal(t, body, string(msgs[0].Data))
		assert.Equal(t, h.ids[0], msgs[0].Client)
		assert.False(t, msgs[0].Dropped)
		assert.Equal(t, 1, srv.MessageCount())
		assert.Len(t, srv.Received("c@example.net"), 1)

		conns := srv.Connections()
		require.Len(t, conns, 1)
		assert.Equal(t, h.ids[0], conns[0].Client)
		assert.False(t, conns[0].Open())
		assert.False(t, conns[0].Refused)
		assert.Equal(t, 1, conns[0].Messages)

		// greeting, EHLO, MAIL, RCPT x2, DATA, final dot, QUIT
		assert.Equal(t, []int{220, 250, 250, 250, 250, 354, 250, 221}, replyCodes(srv.Replies()))
		ehlo := srv.Replies()[1]
		assert.Contains(t, ehlo.Text, "SMTPUTF8")
		assert.NotContains(t, ehlo.Text, "STARTTLS")
		assert.Equal(t, "2.0.0", srv.Replies()[6].Enhanced)
		assert.Equal(t, 0, srv.Throttled(""))
		assert.Equal(t, ClientStats{Connections: 1, Messages: 1, MaxConcurrency: 1}, srv.Stats(h.ids[0]))

		// SMTPUTF8 (go-smtp's client asks for it on non-ASCII addresses).
		c = dial(t, srv, h.ids[1])
		require.NoError(t, c.SendMail("josé@example.org", []string{"用户@例子.广告"}, strings.NewReader(body)))
		require.NoError(t, c.Quit())
		waitIdle(t, srv)
		assert.Len(t, srv.Received("用户@例子.广告"), 1)
	})
}

func TestConcurrencyCapRefusesAtGreeting(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{Limits: Limits{MaxConnections: 2}})
		defer srv.Close()

		c1, c2 := dial(t, srv, h.ids[0]), dial(t, srv, h.ids[0])
		require.NoError(t, c1.Hello("sender.example"))
		require.NoError(t, c2.Hello("sender.example"))

		c3 := dial(t, srv, h.ids[0])
		err := c3.Hello("sender.example")
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 421, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 4, 5}, se.EnhancedCode)
		assert.Contains(t, se.Message, "from "+h.ids[0])
		c3.Close()

		// Another sending IP has its own budget.
		o := dial(t, srv, h.ids[1])
		require.NoError(t, sendMail(o, "a@example.org", []string{"b@example.com"}, body))
		require.NoError(t, o.Quit())

		for _, c := range []*smtp.Client{c1, c2} {
			require.NoError(t, c.Quit())
		}
		waitIdle(t, srv)

		// Slots are released: a new connection is admitted.
		c4 := dial(t, srv, h.ids[0])
		require.NoError(t, c4.Hello("sender.example"))
		require.NoError(t, c4.Quit())
		waitIdle(t, srv)

		st := srv.Stats(h.ids[0])
		assert.Equal(t, ClientStats{Connections: 4, Refused: 1, Throttled: 1, MaxConcurrency: 3}, st)
		assert.Equal(t, 1, srv.MaxConcurrency(h.ids[1]))
		assert.Equal(t, 1, srv.CountCause("", CauseConcurrency))
		r, ok := srv.FirstReply(CauseConcurrency)
		require.True(t, ok)
		assert.Equal(t, Reply{421, "4.4.5", "Too many concurrent connections from " + h.ids[0] + ", try again later"}, r.Reply())
		refused := srv.Connections()[2]
		assert.True(t, refused.Refused)
		assert.Equal(t, 3, srv.MaxConcurrencySince(h.ids[0], time.Time{}))
	})
}

func TestPerClientLimitsOverride(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{
			Limits:  Limits{MaxConnections: 1},
			Clients: map[string]Limits{h.ids[1]: {}}, // unlimited
		})
		defer srv.Close()
		var cs []*smtp.Client
		for range 3 {
			c := dial(t, srv, h.ids[1])
			require.NoError(t, c.Hello("x"))
			cs = append(cs, c)
		}
		c := dial(t, srv, h.ids[0])
		require.NoError(t, c.Hello("x"))
		c2 := dial(t, srv, h.ids[0])
		assert.Equal(t, 421, code(c2.Hello("x")))
		c2.Close()
		for _, c := range append(cs, c) {
			require.NoError(t, c.Quit())
		}
		waitIdle(t, srv)
		assert.Equal(t, 3, srv.MaxConcurrency(h.ids[1]))
		assert.Equal(t, 2, srv.MaxConcurrency(h.ids[0]))
		assert.Equal(t, 5, srv.MaxConcurrency(""))
	})
}

// A rate cap observed in fake time at exact instants.
func TestConnectionRateAtExactInstants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Limits: Limits{ConnectionRate: Rate{Every: 10 * time.Second, Burst: 2}}})
		require.NoError(t, err)
		defer srv.Close()
		t0 := time.Now()

		try := func() error {
			c := dial(t, srv, "192.0.2.1")
			defer c.Close()
			if err := c.Hello("x"); err != nil {
				return err
			}
			return c.Quit()
		}
		require.NoError(t, try())
		require.NoError(t, try())
		assert.Equal(t, 421, code(try()), "third connection in the same instant")

		time.Sleep(10*time.Second - time.Nanosecond)
		assert.Equal(t, 421, code(try()), "one nanosecond before the next token")
		time.Sleep(time.Nanosecond)
		require.NoError(t, try(), "the next token, at exactly t0+10s")
		assert.Equal(t, 421, code(try()))
		time.Sleep(10 * time.Second)
		require.NoError(t, try())

		waitIdle(t, srv)
		var refusedAt []time.Duration
		for _, r := range srv.Replies() {
			if r.Cause == CauseConnectionRate {
				refusedAt = append(refusedAt, r.Time.Sub(t0))
				assert.Equal(t, "4.7.0", r.Enhanced)
			}
		}
		assert.Equal(t, []time.Duration{0, 10*time.Second - time.Nanosecond, 10 * time.Second}, refusedAt)
		assert.Equal(t, 3, srv.Throttled("192.0.2.1"))
	})
}

func TestMessageRateWithPenalty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Yahoo()
		cfg.Limits.MessageRate = Rate{Every: time.Minute, Burst: 2, Reply: YahooDeferralReply, Penalty: 5 * time.Minute}
		srv, err := NewPipeServer(cfg)
		require.NoError(t, err)
		defer srv.Close()
		const ip = "192.0.2.7"

		c := dial(t, srv, ip)
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body))
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body))
		err = sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body)
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 421, se.Code)
		assert.Contains(t, se.Message, "[TSS04] Messages from "+ip)
		assert.Error(t, c.Noop(), "a 421 closes the connection")
		c.Close()

		// During the penalty even a new connection is refused, though a
		// token came back after a minute.
		time.Sleep(time.Minute)
		c = dial(t, srv, ip)
		assert.Equal(t, 421, code(c.Hello("x")))
		c.Close()

		time.Sleep(4*time.Minute - time.Nanosecond)
		c = dial(t, srv, ip)
		assert.Equal(t, 421, code(c.Hello("x")), "still within the penalty")
		c.Close()

		time.Sleep(time.Nanosecond)
		c = dial(t, srv, ip)
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body))
		require.NoError(t, c.Quit())
		waitIdle(t, srv)

		assert.Equal(t, 1, srv.CountCause(ip, CauseMessageRate))
		assert.Equal(t, 2, srv.CountCause(ip, CausePenalty))
		assert.Equal(t, 3, srv.Throttled(ip))
		assert.Equal(t, 3, srv.MessageCount())
	})
}

func TestMessageRate451KeepsConnection(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		cfg := Outlook()
		cfg.StartTLS = false
		cfg.Limits.MessageRate = Rate{Every: time.Hour, Burst: 1, Reply: OutlookRateReply}
		srv := startServer(t, h, cfg)
		defer srv.Close()

		c := dial(t, srv, h.ids[0])
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@outlook.test"}, body))
		err := sendMail(c, "a@example.org", []string{"b@outlook.test"}, body)
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 451, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 7, 650}, se.EnhancedCode)
		assert.Contains(t, se.Message, "The mail server ["+h.ids[0]+"]")
		require.NoError(t, c.Noop(), "a 451 leaves the connection open")
		require.NoError(t, c.Quit())
		waitIdle(t, srv)
		assert.Equal(t, 1, srv.Throttled(h.ids[0]))
	})
}

func TestGreylisting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Greylist: Greylist{Delay: 5 * time.Minute}})
		require.NoError(t, err)
		defer srv.Close()

		attempt := func(ip, rcpt string) error {
			c := dial(t, srv, ip)
			defer c.Close()
			if err := sendMail(c, "a@example.org", []string{rcpt}, body); err != nil {
				return err
			}
			return c.Quit()
		}
		err = attempt("192.0.2.1", "b@example.com")
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 451, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 7, 1}, se.EnhancedCode)

		time.Sleep(5*time.Minute - time.Second)
		assert.Equal(t, 451, code(attempt("192.0.2.1", "b@example.com")), "retry too early")
		time.Sleep(time.Second)
		require.NoError(t, attempt("192.0.2.1", "b@example.com"), "retry after the delay")
		require.NoError(t, attempt("192.0.2.1", "b@example.com"), "the triple stays known")

		// Each part of the triple counts.
		assert.Equal(t, 451, code(attempt("192.0.2.2", "b@example.com")), "another IP")
		assert.Equal(t, 451, code(attempt("192.0.2.1", "c@example.com")), "another recipient")

		waitIdle(t, srv)
		assert.Equal(t, 2, srv.MessageCount())
		assert.Equal(t, 3, srv.Stats("192.0.2.1").Greylisted)
		assert.Equal(t, 4, srv.CountCause("", CauseGreylist))
		assert.Equal(t, 0, srv.Throttled(""), "greylisting is not throttling")
	})
}

func TestGreylistingOverTCP(t *testing.T) {
	srv, err := NewServer(Config{Greylist: Greylist{Delay: time.Hour}})
	require.NoError(t, err)
	defer srv.Close()
	c := dial(t, srv, "127.0.0.1")
	assert.Equal(t, 451, code(sendMail(c, "a@example.org", []string{"b@example.com"}, body)))
	require.NoError(t, c.Reset())
	assert.Equal(t, 451, code(sendMail(c, "a@example.org", []string{"b@example.com"}, body)))
	require.NoError(t, c.Quit())
	waitIdle(t, srv)
	assert.Equal(t, 2, srv.CountCause("127.0.0.1", CauseGreylist))
}

func TestScriptedRecipients(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{
			Recipients: map[string]Reply{
				"gone@example.com": GmailUnknownUserReply,
				"full@example.com": GmailMailboxFullReply,
			},
			Faults: []Fault{{Step: StepRcpt, Recipient: "busy@example.com", Action: ActionReply, Reply: GmailReceivingTooFastReply, Times: 2}},
		})
		defer srv.Close()
		c := dial(t, srv, h.ids[0])
		require.NoError(t, c.Mail("a@example.org", nil))
		assert.Equal(t, 550, code(c.Rcpt("gone@example.com", nil)))
		assert.Equal(t, 452, code(c.Rcpt("full@example.com", nil)))
		assert.Equal(t, 450, code(c.Rcpt("busy@example.com", nil)))
		assert.Equal(t, 450, code(c.Rcpt("busy@example.com", nil)))
		require.NoError(t, c.Rcpt("busy@example.com", nil), "the script ran out")
		require.NoError(t, c.Rcpt("ok@example.com", nil))
		w, err := c.Data()
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		require.NoError(t, c.Quit())
		waitIdle(t, srv)

		msgs := srv.Messages()
		require.Len(t, msgs, 1)
		assert.Equal(t, []string{"busy@example.com", "ok@example.com"}, msgs[0].To)
		assert.Equal(t, 2, srv.CountCause("", CauseRecipient))
		assert.Equal(t, 2, srv.CountCause("", CauseFault))
	})
}

func TestMaxMessagesAndRecipients(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{Limits: Limits{MaxMessagesPerConnection: 2, MaxRecipients: 2}})
		defer srv.Close()
		c := dial(t, srv, h.ids[0])
		require.NoError(t, c.Mail("a@example.org", nil))
		require.NoError(t, c.Rcpt("1@example.com", nil))
		require.NoError(t, c.Rcpt("2@example.com", nil))
		err := c.Rcpt("3@example.com", nil)
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 452, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 5, 3}, se.EnhancedCode)
		w, err := c.Data()
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
		require.NoError(t, w.Close(), "the message goes to the first two")

		require.NoError(t, sendMail(c, "a@example.org", []string{"4@example.com"}, body))
		assert.Equal(t, 421, code(sendMail(c, "a@example.org", []string{"5@example.com"}, body)))
		assert.Error(t, c.Noop(), "the 421 closed the connection")
		c.Close()
		waitIdle(t, srv)

		assert.Equal(t, 2, srv.MessageCount())
		assert.Equal(t, []string{"1@example.com", "2@example.com"}, srv.Messages()[0].To)
		assert.Equal(t, 1, srv.CountCause("", CauseMaxRecipients))
		assert.Equal(t, 1, srv.CountCause("", CauseMaxMessages))
		assert.Equal(t, 2, srv.Connections()[0].Messages)
	})
}

func TestLatencyPerCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Latency: Latency{Greeting: time.Second, Hello: 2 * time.Second, Mail: 3 * time.Second, Rcpt: 4 * time.Second, Data: 5 * time.Second}})
		require.NoError(t, err)
		defer srv.Close()
		c := dial(t, srv, "192.0.2.1")

		took := func(f func() error) time.Duration {
			start := time.Now()
			require.NoError(t, f())
			return time.Since(start)
		}
		assert.Equal(t, 3*time.Second, took(func() error { return c.Hello("x") }), "greeting + EHLO")
		assert.Equal(t, 3*time.Second, took(func() error { return c.Mail("a@example.org", nil) }))
		assert.Equal(t, 4*time.Second, took(func() error { return c.Rcpt("b@example.com", nil) }))
		w, err := c.Data()
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
		assert.Equal(t, 5*time.Second, took(w.Close), "final dot to reply")
		assert.Zero(t, took(c.Quit))
		waitIdle(t, srv)
	})
}

func TestEveryCommand(t *testing.T) {
	assert.Equal(t, Latency{time.Second, time.Second, time.Second, time.Second, time.Second}, EveryCommand(time.Second))
}

// Every fault at every step, over both listeners: the client sees the
// expected failure, the record says what happened, nothing leaks.
func TestFaults(t *testing.T) {
	steps := []Step{StepConnect, StepHello, StepMail, StepRcpt, StepData, StepBody, StepDot}
	actions := []Action{ActionReply, ActionDrop, ActionGarbage, ActionHang}
	for _, h := range harnesses {
		for _, step := range steps {
			for _, action := range actions {
				t.Run(h.name+"/"+step.String()+"/"+action.String(), func(t *testing.T) {
					h.run(t, func(t *testing.T) {
						if action == ActionHang && !h.fake {
							t.Skip("a hang is waited out in fake time; TestCloseEndsHangs covers TCP")
						}
						f := Fault{Step: step, Action: action, Times: 1}
						if action == ActionReply {
							f.Reply = Reply{421, "4.3.2", "System shutting down"}
							if step == StepConnect {
								f.Reply = Reply{554, "5.7.1", "No SMTP service here"}
							}
						}
						srv := startServer(t, h, Config{Faults: []Fault{f}})
						defer srv.Close()

						c := dial(t, srv, h.ids[0])
						c.CommandTimeout = time.Minute // waited out in fake time on hangs
						c.SubmissionTimeout = time.Minute
						err := sendMail(c, "a@example.org", []string{"b@example.com"}, body)
						require.Error(t, err)
						switch action {
						case ActionReply:
							assert.Equal(t, f.Reply.Code, code(err), "%v", err)
						default:
							assert.Equal(t, 0, code(err), "not an SMTP reply: %v", err)
						}
						c.Close()
						waitIdle(t, srv)

						if step == StepDot && action != ActionReply {
							msgs := srv.Messages()
							require.Len(t, msgs, 1, "the receiver got it but did not say so")
							assert.True(t, msgs[0].Dropped)
						} else {
							assert.Empty(t, srv.Messages())
						}
						assert.Equal(t, 0, srv.MessageCount())
						switch action {
						case ActionReply:
							assert.Equal(t, 1, srv.CountCause("", CauseFault))
							assert.Equal(t, 1, srv.CountCode("", f.Reply.Code))
						case ActionGarbage:
							assert.Equal(t, 1, srv.CountCause("", CauseFault))
							assert.Equal(t, 1, srv.CountCode("", 0))
						default:
							assert.Equal(t, 0, srv.CountCause("", CauseFault))
						}
						assert.Equal(t, step == StepConnect, srv.Connections()[0].Refused)

						// Times: 1 — the next connection goes through.
						c = dial(t, srv, h.ids[0])
						require.NoError(t, sendMail(c, "a@example.org", []string{"b@example.com"}, body))
						require.NoError(t, c.Quit())
						waitIdle(t, srv)
						assert.Equal(t, 1, srv.MessageCount())
					})
				})
			}
		}
	}
}

func TestFaultFilters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Faults: []Fault{
			{Step: StepMail, Action: ActionReply, Reply: Reply{451, "4.3.0", "try later"}, Client: "192.0.2.9", Skip: 1, Times: 2},
		}})
		require.NoError(t, err)
		defer srv.Close()
		c := dial(t, srv, "192.0.2.9")
		o := dial(t, srv, "192.0.2.1")
		require.NoError(t, o.Mail("a@example.org", nil), "other client")
		require.NoError(t, c.Mail("a@example.org", nil), "skipped")
		require.NoError(t, c.Reset())
		assert.Equal(t, 451, code(c.Mail("a@example.org", nil)))
		assert.Equal(t, 451, code(c.Mail("a@example.org", nil)))
		require.NoError(t, c.Mail("a@example.org", nil), "times used up")
		require.NoError(t, c.Quit())
		require.NoError(t, o.Quit())
		waitIdle(t, srv)
	})
}

func TestCloseEndsHangs(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{Faults: []Fault{
			{Step: StepConnect, Action: ActionHang, Client: h.ids[1]},
			{Step: StepHello, Action: ActionHang, Client: h.ids[0]},
		}, Latency: Latency{Mail: time.Hour}})
		done := make(chan error, 3)
		for _, id := range h.ids {
			c := dial(t, srv, id)
			go func() {
				defer c.Close()
				done <- c.Hello("x")
			}()
		}
		// A third client waits in a long latency.
		c := dial(t, srv, "127.0.0.3")
		if h.fake {
			c = dial(t, srv, "192.0.2.3")
		}
		go func() {
			defer c.Close()
			done <- c.Mail("a@example.org", nil)
		}()
		if h.fake {
			synctest.Wait() // everyone is blocked in the server
		}
		require.NoError(t, srv.Close())
		for range 3 {
			assert.Error(t, <-done)
		}
		require.NoError(t, srv.Close(), "Close is idempotent")
		if !h.fake {
			goleak.VerifyNone(t) // outside a bubble: nothing of the server is left
		}
		_, err := srv.DialContext(context.Background(), "tcp", srv.Addr())
		assert.Error(t, err, "closed")
	})
}

func TestStartTLS(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		cfg := Gmail()
		cfg.Limits = Limits{MaxMessagesPerConnection: 1}
		srv := startServer(t, h, cfg)
		defer srv.Close()
		require.NotNil(t, srv.CertPool())

		conn, err := srv.DialAs(h.ids[0])(context.Background(), "tcp", srv.Addr())
		require.NoError(t, err)
		c, err := smtp.NewClientStartTLS(conn, srv.ClientTLSConfig())
		require.NoError(t, err)
		require.NoError(t, sendMail(c, "", []string{"b@gmail.test"}, body), "null sender")
		state, ok := c.TLSConnectionState()
		require.True(t, ok)
		require.NotEmpty(t, state.PeerCertificates)
		assert.Equal(t, "mx.gmail.test", state.PeerCertificates[0].Subject.CommonName)
		assert.Equal(t, 421, code(sendMail(c, "a@example.org", []string{"b@gmail.test"}, body)))
		assert.Error(t, c.Noop(), "the 421 closed the connection under TLS too")
		c.Close()
		waitIdle(t, srv)

		conns := srv.Connections()
		require.Len(t, conns, 1)
		assert.True(t, conns[0].TLS)
		assert.Equal(t, 1, srv.MessageCount())
		// Wire replies until STARTTLS; then the receiver's own decisions.
		assert.Equal(t, []int{220, 250, 220, 250, 250, 250, 421}, replyCodes(srv.Replies()))
		rs := srv.Replies()
		assert.Equal(t, CauseMaxMessages, rs[6].Cause)
		assert.Equal(t, "Roger, accepting mail from <>", rs[3].Text)
		assert.Equal(t, "I'll make sure <b@gmail.test> gets this", rs[4].Text)
		assert.Equal(t, "OK: queued", rs[5].Text)
	})
}

func TestStartTLSNotOffered(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{})
		defer srv.Close()
		assert.Nil(t, srv.ClientTLSConfig())
		assert.Nil(t, srv.CertPool())
		conn, err := srv.DialAs(h.ids[0])(context.Background(), "tcp", srv.Addr())
		require.NoError(t, err)
		_, err = smtp.NewClientStartTLS(conn, &tls.Config{})
		assert.ErrorContains(t, err, "doesn't support STARTTLS")
		waitIdle(t, srv)
	})
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{IdleTimeout: time.Minute})
		require.NoError(t, err)
		defer srv.Close()
		conn, err := srv.DialContext(context.Background(), "tcp", srv.Addr())
		require.NoError(t, err)
		c := smtp.NewClient(conn)
		require.NoError(t, c.Hello("x"))
		time.Sleep(time.Minute)
		// A pipe has no buffer: read the unsolicited reply rather than
		// write a command over it.
		buf := make([]byte, 100)
		n, err := conn.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "421 4.4.2 Idle timeout, bye bye\r\n", string(buf[:n]))
		c.Close()
		waitIdle(t, srv)
		assert.Equal(t, 1, srv.CountCode("", 421))
	})
}

func TestAuthPlain(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{Users: map[string]string{"relay": "secret"}})
		defer srv.Close()
		c := dial(t, srv, h.ids[0])
		require.NoError(t, c.Hello("x"))
		assert.True(t, c.SupportsAuth("PLAIN"))
		assert.Equal(t, 535, code(c.Auth(sasl.NewPlainClient("", "relay", "wrong"))))
		require.NoError(t, c.Auth(sasl.NewPlainClient("", "relay", "secret")))
		require.NoError(t, c.Quit())
		waitIdle(t, srv)
		assert.Equal(t, "relay", srv.Connections()[0].User)

		s2 := startServer(t, h, Config{})
		defer s2.Close()
		c = dial(t, s2, h.ids[0])
		require.NoError(t, c.Hello("x"))
		assert.False(t, c.SupportsAuth("PLAIN"))
		require.NoError(t, c.Quit())
		waitIdle(t, s2)
	})
}

func TestDialer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, err := NewPipeServer(Config{Addr: "mx.a.test:25"})
		require.NoError(t, err)
		defer a.Close()
		b, err := NewPipeServer(Config{})
		require.NoError(t, err)
		defer b.Close()
		assert.Equal(t, "mx.a.test:25", a.Addr())

		_, err = NewPipeServer(Config{Addr: "mx.a.test:25"})
		assert.ErrorIs(t, err, ErrInvalidConfig, "name taken")

		d := Dialer{Identity: "192.0.2.5"}
		ctx := context.Background()
		for _, tc := range []struct {
			srv  *Server
			ctx  context.Context
			want string
		}{
			{a, ctx, "192.0.2.5"},
			{b, WithIdentity(ctx, "192.0.2.6"), "192.0.2.6"},
		} {
			conn, err := d.DialContext(tc.ctx, "tcp", tc.srv.Addr())
			require.NoError(t, err)
			assert.Equal(t, PipeAddr(tc.want), conn.LocalAddr())
			assert.Equal(t, "pipe", conn.LocalAddr().Network())
			assert.Equal(t, tc.srv.Addr(), conn.RemoteAddr().String())
			c := smtp.NewClient(conn)
			require.NoError(t, c.Quit())
			waitIdle(t, tc.srv)
			assert.Equal(t, tc.want, tc.srv.Connections()[0].Client)
		}

		conn, err := Dialer{}.DialContext(ctx, "tcp", a.Addr())
		require.NoError(t, err)
		conn.Close()
		synctest.Wait() // the server records a connection just after the dial returns
		waitIdle(t, a)
		assert.Equal(t, DefaultIdentity, a.Connections()[1].Client)

		// Server hooks ignore addr.
		conn, err = a.DialAs("192.0.2.8")(ctx, "tcp", "anything:25")
		require.NoError(t, err)
		conn.Close()
		conn, err = a.DialContext(WithIdentity(ctx, "192.0.2.9"), "tcp", "")
		require.NoError(t, err)
		conn.Close()
		synctest.Wait()
		waitIdle(t, a)
		assert.Equal(t, []string{DefaultIdentity, "192.0.2.5", "192.0.2.8", "192.0.2.9"}, a.ClientNames())

		conn, err = d.DialSource(WithIdentity(ctx, "192.0.2.1"), "tcp", a.Addr(), netip.MustParseAddr("192.0.2.77"))
		require.NoError(t, err)
		assert.Equal(t, PipeAddr("192.0.2.77"), conn.LocalAddr(), "the source wins")
		conn.Close()
		conn, err = d.DialSource(ctx, "tcp", a.Addr(), netip.Addr{})
		require.NoError(t, err)
		assert.Equal(t, PipeAddr("192.0.2.5"), conn.LocalAddr(), "no source: the Dialer's identity")
		conn.Close()

		_, err = d.DialContext(ctx, "tcp", "mx.unknown.test:25")
		assert.Error(t, err)
		_, err = d.DialContext(ctx, "tcp", "no-port")
		assert.Error(t, err)

		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err = a.DialContext(cctx, "tcp", "")
		assert.ErrorIs(t, err, context.Canceled)

		require.NoError(t, a.Close())
		_, err = d.DialContext(ctx, "tcp", "mx.a.test:25")
		assert.Error(t, err, "closed pipe servers are unregistered")
		b.Close()
		_, err = b.DialContext(ctx, "tcp", "")
		assert.ErrorIs(t, err, ErrServerClosed)
	})
}

func TestDialerOverTCP(t *testing.T) {
	srv, err := NewServer(Config{})
	require.NoError(t, err)
	defer srv.Close()
	conn, err := Dialer{Identity: "127.0.0.2"}.DialContext(context.Background(), "tcp", srv.Addr())
	require.NoError(t, err)
	c := smtp.NewClient(conn)
	require.NoError(t, c.Quit())
	waitIdle(t, srv)
	assert.Equal(t, "127.0.0.2", srv.Connections()[0].Client)

	_, err = srv.DialAs("192.0.2.1")(context.Background(), "tcp", "")
	assert.ErrorContains(t, err, "not a loopback IP")
	_, err = Dialer{}.DialContext(context.Background(), "tcp", "192.0.2.1:25")
	assert.Error(t, err, "never leaves loopback")
}

func TestMaxMessageBytesAndDiscardData(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{MaxMessageBytes: 64, DiscardData: true})
		defer srv.Close()
		c := dial(t, srv, h.ids[0])
		require.NoError(t, sendMail(c, "a@example.org", []string{"b@example.com"}, body))
		assert.Equal(t, 552, code(sendMail(c, "a@example.org", []string{"b@example.com"}, strings.Repeat("x", 100)+"\r\n")))
		require.NoError(t, c.Quit())
		waitIdle(t, srv)
		require.Len(t, srv.Messages(), 1)
		assert.Nil(t, srv.Messages()[0].Data)
	})
}

func TestMaxConcurrencySince(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Limits: Limits{MaxConnections: 2}})
		require.NoError(t, err)
		defer srv.Close()
		const ip = "192.0.2.1"
		var open []*smtp.Client
		for range 3 {
			c := dial(t, srv, ip)
			_ = c.Hello("x")
			open = append(open, c)
		}
		synctest.Wait() // the record follows the wire
		first, ok := srv.FirstReply(CauseConcurrency)
		require.True(t, ok)
		assert.Equal(t, 0, srv.MaxConcurrencyAfter(ip, first), "no connection opened since")
		open[2].Close()
		require.NoError(t, open[0].Quit())
		waitIdleFor(t, srv, 1)
		time.Sleep(time.Second)
		after := time.Now()
		c := dial(t, srv, ip)
		require.NoError(t, c.Hello("x"), "one open: admitted")
		assert.Equal(t, 3, srv.MaxConcurrencySince(ip, first.Time))
		assert.Equal(t, 3, srv.MaxConcurrencySince("", time.Time{}))
		assert.Equal(t, 2, srv.MaxConcurrencySince(ip, after))
		assert.Equal(t, 2, srv.MaxConcurrencyAfter(ip, first))
		assert.Equal(t, 2, srv.MaxConcurrencyAfter("", first))
		assert.Equal(t, 0, srv.MaxConcurrencyAfter("192.0.2.99", first))
		assert.Equal(t, 0, srv.MaxConcurrencySince("192.0.2.99", time.Time{}))
		require.NoError(t, open[1].Quit())
		require.NoError(t, c.Quit())
		waitIdle(t, srv)
	})
}

// waitIdleFor waits (in a bubble) until n connections are open.
func waitIdleFor(t *testing.T, srv *Server, n int) {
	t.Helper()
	synctest.Wait()
	open := 0
	for _, c := range srv.Connections() {
		if c.Open() {
			open++
		}
	}
	require.Equal(t, n, open)
}

func TestConfigValidation(t *testing.T) {
	bad := map[string]Config{
		"negative cap":           {Limits: Limits{MaxConnections: -1}},
		"negative rate":          {Limits: Limits{MessageRate: Rate{Every: -time.Second}}},
		"bad rate reply":         {Limits: Limits{ConnectionRate: Rate{Every: time.Second, Reply: Reply{Code: 250, Text: "ok"}}}},
		"code out of range":      {Limits: Limits{ConnectionsReply: Reply{Code: 999}}},
		"enhanced class":         {Limits: Limits{ConnectionsReply: Reply{421, "5.4.5", "x"}}},
		"enhanced syntax":        {Limits: Limits{ConnectionsReply: Reply{421, "4.4", "x"}}},
		"CR in text":             {Limits: Limits{ConnectionsReply: Reply{421, "4.4.5", "a\r\nb"}}},
		"client limits":          {Clients: map[string]Limits{"x": {MaxRecipients: -2}}},
		"greylist delay":         {Greylist: Greylist{Delay: -1}},
		"greylist reply":         {Greylist: Greylist{Delay: time.Second, Reply: Reply{Code: 200}}},
		"recipient reply":        {Recipients: map[string]Reply{"a@b": {Code: 42}}},
		"latency":                {Latency: Latency{Rcpt: -1}},
		"fault step":             {Faults: []Fault{{Action: ActionDrop}}},
		"fault action":           {Faults: []Fault{{Step: StepMail}}},
		"fault reply":            {Faults: []Fault{{Step: StepMail, Action: ActionReply}}},
		"fault recipient filter": {Faults: []Fault{{Step: StepMail, Action: ActionDrop, Recipient: "a@b"}}},
		"fault times":            {Faults: []Fault{{Step: StepMail, Action: ActionDrop, Times: -1}}},
		"size":                   {MaxMessageBytes: -1},
		"domain":                 {Domain: "a b"},
		"addr":                   {Addr: "no-port"},
		"NoPipelining StartTLS":  {NoPipelining: true, StartTLS: true},
	}
	for name, cfg := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := NewServer(cfg)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			_, err = NewPipeServer(cfg)
			assert.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
	_, err := NewServer(Config{Addr: "192.0.2.1:25"})
	assert.ErrorIs(t, err, ErrInvalidConfig, "TCP stays on loopback")
	_, err = NewServer(Config{Addr: "127.0.0.1:99999"})
	assert.Error(t, err)

	for _, cfg := range []Config{Gmail(), Yahoo(), Outlook()} {
		assert.NoError(t, cfg.validate(true))
	}
}

func TestStrings(t *testing.T) {
	assert.Equal(t, "421 4.4.5 Server busy, try again later. - gsmtp", GmailConcurrencyReply.String())
	assert.Equal(t, "421 Max message per connection reached, closing transmission channel", YahooMaxMessagesReply.String())
	assert.Equal(t, "dot", StepDot.String())
	assert.Equal(t, "Step(42)", Step(42).String())
	assert.Equal(t, "hang", ActionHang.String())
	assert.Equal(t, "Action(0)", Action(0).String())
	assert.Equal(t, "greylist", CauseGreylist.String())
	assert.Equal(t, "Cause(99)", Cause(99).String())
	assert.True(t, CausePenalty.Throttling())
	assert.False(t, CauseGreylist.Throttling())
}

func TestReplyWireLayout(t *testing.T) {
	r := Reply{421, "4.7.28", "[{client}] line one\nline two"}
	assert.Equal(t, "421-4.7.28 [192.0.2.1] line one\r\n421 4.7.28 line two\r\n", string(r.wire("192.0.2.1")))
	assert.Equal(t, "421 no code\r\n", string(Reply{421, "", "no code"}.wire("x")))
}

// The Gmail preset over the wire: the refusal at connect is written as Gmail
// does (enhanced code on every line), go-smtp's replies carry it on the last.
func TestPresetsOverTheWire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Gmail())
		require.NoError(t, err)
		defer srv.Close()
		var cs []*smtp.Client
		for i := range 3 {
			c := dial(t, srv, "192.0.2.1")
			err := c.Hello("x")
			if i < 2 {
				require.NoError(t, err)
				cs = append(cs, c)
				continue
			}
			var se *smtp.SMTPError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, GmailConcurrencyReply.Code, se.Code)
			assert.Equal(t, smtp.EnhancedCode{4, 4, 5}, se.EnhancedCode)
			assert.Equal(t, GmailConcurrencyReply.Text, se.Message)
			c.Close()
		}
		// Burst 20 then 421 4.7.28.
		var rateErr error
		for range 21 {
			if rateErr = sendMail(cs[0], "a@example.org", []string{"b@gmail.test"}, body); rateErr != nil {
				break
			}
		}
		var se *smtp.SMTPError
		require.ErrorAs(t, rateErr, &se)
		assert.Equal(t, 421, se.Code)
		assert.Contains(t, se.Message, "[192.0.2.1] Our system has detected an unusual rate of")
		synctest.Wait()
		r, ok := srv.FirstReply(CauseMessageRate)
		require.True(t, ok)
		assert.Equal(t, "4.7.28", r.Enhanced)
		assert.Equal(t, strings.ReplaceAll(GmailRateReply.Text, "{client}", "192.0.2.1"), r.Text)
		for _, c := range cs {
			c.Close()
		}
		waitIdle(t, srv)
		assert.Equal(t, 20, srv.MessageCount())
		assert.Equal(t, 2, srv.Throttled("192.0.2.1"))
	})
}

func TestIdentityOf(t *testing.T) {
	assert.Equal(t, "127.0.0.2", identityOf(&net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 1}))
	assert.Equal(t, "x", identityOf(PipeAddr("x")))
	assert.Equal(t, "", identityOf(nil))
	assert.Equal(t, "/tmp/s", identityOf(&net.UnixAddr{Name: "/tmp/s", Net: "unix"}))
	_, ok := IdentityFrom(context.Background())
	assert.False(t, ok)
	assert.True(t, errors.Is(ErrServerClosed, ErrServerClosed))
}

func TestPresetsYahooAndOutlook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		y, err := NewPipeServer(Yahoo())
		require.NoError(t, err)
		defer y.Close()
		c := dial(t, y, "192.0.2.1")
		for i := range 50 {
			require.NoError(t, sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body), "message %d", i)
			time.Sleep(200 * time.Millisecond) // one token back each time
		}
		err = sendMail(c, "a@example.org", []string{"b@yahoo.test"}, body)
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 421, se.Code)
		assert.Equal(t, YahooMaxMessagesReply.Text, se.Message)
		c.Close()
		waitIdle(t, y)
		r, ok := y.FirstReply(CauseMaxMessages)
		require.True(t, ok)
		assert.Equal(t, YahooMaxMessagesReply, r.Reply(), "no enhanced code, as Yahoo sends it")

		o, err := NewPipeServer(Outlook())
		require.NoError(t, err)
		defer o.Close()
		var cs []*smtp.Client
		for range 10 {
			c := dial(t, o, "192.0.2.1")
			require.NoError(t, c.Hello("x"))
			cs = append(cs, c)
		}
		c = dial(t, o, "192.0.2.1")
		require.ErrorAs(t, c.Hello("x"), &se)
		assert.Equal(t, 421, se.Code)
		assert.Equal(t, smtp.EnhancedCode{4, 3, 2}, se.EnhancedCode)
		c.Close()
		for _, c := range cs {
			require.NoError(t, c.Quit())
		}
		waitIdle(t, o)
		assert.Equal(t, 1, o.Throttled(""))
	})
}

func TestGarbageDuringBodyUnderTLS(t *testing.T) {
	for _, step := range []Step{StepData, StepBody} {
		t.Run(step.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, err := NewPipeServer(Config{StartTLS: true, Faults: []Fault{{Step: step, Action: ActionGarbage}}})
				require.NoError(t, err)
				defer srv.Close()
				conn, err := srv.DialContext(context.Background(), "tcp", srv.Addr())
				require.NoError(t, err)
				c, err := smtp.NewClientStartTLS(conn, srv.ClientTLSConfig())
				require.NoError(t, err)
				c.CommandTimeout = time.Minute
				c.SubmissionTimeout = time.Minute
				err = sendMail(c, "a@example.org", []string{"b@example.com"}, strings.Repeat(body, 100))
				assert.Equal(t, 0, code(err), "%v", err)
				c.Close()
				waitIdle(t, srv)
				assert.Equal(t, 1, srv.CountCode("", 0))
				assert.Zero(t, srv.MessageCount())
			})
		})
	}
}

func TestFaultsUnderTLS(t *testing.T) {
	for _, action := range []Action{ActionReply, ActionDrop, ActionGarbage, ActionHang} {
		t.Run(action.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := Fault{Step: StepMail, Action: action, Reply: Reply{421, "4.7.0", "Try again later,\nclosing connection."}}
				srv, err := NewPipeServer(Config{StartTLS: true, Faults: []Fault{f}})
				require.NoError(t, err)
				defer srv.Close()
				assert.Equal(t, defaultDomain, srv.Domain())
				conn, err := srv.DialContext(context.Background(), "tcp", srv.Addr())
				require.NoError(t, err)
				c, err := smtp.NewClientStartTLS(conn, srv.ClientTLSConfig())
				require.NoError(t, err)
				c.CommandTimeout = time.Minute
				err = c.Mail("a@example.org", nil)
				require.Error(t, err)
				if action == ActionReply {
					assert.Equal(t, 421, code(err))
					assert.Error(t, c.Noop(), "closed after the 421's two lines")
				} else {
					assert.Equal(t, 0, code(err))
				}
				c.Close()
				waitIdle(t, srv)
				assert.True(t, srv.Connections()[0].TLS)
				switch action {
				case ActionReply:
					r, ok := srv.FirstReply(CauseFault)
					require.True(t, ok)
					assert.Equal(t, f.Reply, r.Reply())
				case ActionGarbage:
					assert.Equal(t, 1, srv.CountCode("", 0))
				}
				assert.Equal(t, map[string]ClientStats{DefaultIdentity: {Connections: 1, MaxConcurrency: 1}}, srv.Clients())
			})
		})
	}
}

func TestIsEnhancedAgreesWithParse(t *testing.T) {
	for _, s := range []string{"4.4.5", "2.0.0", "5.7.650", "4.7.1000", "3.0.0", "4.4", "4..5", ".4.5", "4.4.5.", "44.4.5", "4.a.5", "", "Server", "4.4.5x"} {
		_, err := parseEnhanced(s)
		assert.Equal(t, err == nil, isEnhanced(s), s)
	}
}

func TestMeanConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := NewPipeServer(Config{Limits: Limits{MaxConnections: 2}})
		require.NoError(t, err)
		defer srv.Close()
		t0 := time.Now()
		a := dial(t, srv, "192.0.2.1")
		require.NoError(t, a.Hello("x"))
		time.Sleep(10 * time.Second)
		b := dial(t, srv, "192.0.2.1")
		require.NoError(t, b.Hello("x"))
		refused := dial(t, srv, "192.0.2.1")
		assert.Equal(t, 421, code(refused.Hello("x")), "refused connections do not count")
		refused.Close()
		o := dial(t, srv, "192.0.2.2")
		require.NoError(t, o.Hello("x"))
		time.Sleep(10 * time.Second)
		require.NoError(t, a.Quit())
		require.NoError(t, b.Quit())
		require.NoError(t, o.Quit())
		waitIdle(t, srv)
		t1 := time.Now()
		time.Sleep(20 * time.Second)

		// 1 connection for 10 s, then 2 for 10 s: 1.5 on average.
		assert.InDelta(t, 1.5, srv.MeanConcurrency("192.0.2.1", t0, t1), 1e-9)
		assert.InDelta(t, 0.75, srv.MeanConcurrency("192.0.2.1", t0, time.Time{}), 1e-9, "to now")
		assert.InDelta(t, 2.0, srv.MeanConcurrency("192.0.2.1", t0.Add(10*time.Second), t1), 1e-9)
		assert.InDelta(t, 2.0, srv.MeanConcurrency("", t0, t1), 1e-9)
		assert.Zero(t, srv.MeanConcurrency("", t1, t0))
	})
}

// Many clients at once: the record's sums agree with what the clients saw.
func TestConcurrentClientsAccounting(t *testing.T) {
	eachHarness(t, func(t *testing.T, h harness) {
		srv := startServer(t, h, Config{
			Limits:  Limits{MaxConnections: 3, MessageRate: Rate{Every: time.Hour, Burst: 40}},
			Latency: EveryCommand(time.Millisecond),
		})
		defer srv.Close()
		type result struct{ sent, refusedAtConnect, rateLimited int }
		results := make(chan result, 20)
		for g := range 20 {
			go func() {
				var r result
				id := h.ids[g%2]
				for range 5 {
					c, err := srv.Client(id)
					if err != nil {
						t.Error(err)
						break
					}
					err = sendMail(c, "a@example.org", []string{"b@example.com"}, body)
					switch {
					case err == nil:
						r.sent++
						c.Quit()
					case code(err) == 421 && strings.Contains(err.Error(), "concurrent"):
						r.refusedAtConnect++
					case code(err) == 421:
						r.rateLimited++
					default:
						t.Error(err)
					}
					c.Close()
				}
				results <- r
			}()
		}
		var total result
		for range 20 {
			r := <-results
			total.sent += r.sent
			total.refusedAtConnect += r.refusedAtConnect
			total.rateLimited += r.rateLimited
		}
		waitIdle(t, srv)

		assert.Equal(t, 100, total.sent+total.refusedAtConnect+total.rateLimited)
		assert.Equal(t, total.sent, srv.MessageCount())
		assert.LessOrEqual(t, total.sent, 80, "two buckets of 40")
		assert.Equal(t, total.refusedAtConnect, srv.CountCause("", CauseConcurrency))
		assert.Equal(t, total.rateLimited, srv.CountCause("", CauseMessageRate))
		conns := srv.Connections()
		assert.Len(t, conns, 100)
		refused, msgs := 0, 0
		for _, c := range conns {
			assert.False(t, c.Open())
			if c.Refused {
				refused++
			}
			msgs += c.Messages
		}
		assert.Equal(t, total.refusedAtConnect, refused)
		assert.Equal(t, total.sent, msgs)
		for _, id := range h.ids {
			st := srv.Stats(id)
			assert.Equal(t, 50, st.Connections)
			assert.Equal(t, st.MaxConcurrency, srv.MaxConcurrencySince(id, time.Time{}))
			assert.LessOrEqual(t, srv.MeanConcurrency(id, conns[0].Start, time.Time{}), 3.0)
		}
		assert.Equal(t, srv.MaxConcurrency(""), srv.MaxConcurrencySince("", time.Time{}))
	})
}
