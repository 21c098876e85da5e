package deliver

import (
	"context"
	"errors"
	"net/netip"
	netsmtp "net/smtp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

func netsmtpClient(t *testing.T, srv *delivertest.Server) *netsmtp.Client {
	t.Helper()
	conn, err := delivertest.Dialer{}.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	host := strings.Split(srv.Addr(), ":")[0]
	c, err := netsmtp.NewClient(conn, host)
	require.NoError(t, err)
	require.NoError(t, c.Hello("sender.example.org"))
	return c
}

func TestSendNetSMTP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Recipients: map[string]delivertest.Reply{
			"nobody@example.test": {Code: 550, Enhanced: "5.1.1", Text: "No such user"},
		}})
		h := newHarness(t, srv, nil)
		c := netsmtpClient(t, srv)
		host := strings.Split(srv.Addr(), ":")[0]

		res, err := h.s.SendNetSMTP(t.Context(), c, host, msg("a@example.test", "nobody@example.test", "b@other.test"))
		require.NoError(t, err)
		require.Len(t, res, 3)
		assert.Equal(t, Delivered, res[0].Status)
		assert.Equal(t, smtpcode.RuleSuccess, res[0].Class.Rule)
		assert.Equal(t, Bounced, res[1].Status)
		assert.Equal(t, smtpcode.UnknownUser, res[1].Class.Category)
		assert.Equal(t, Delivered, res[2].Status)
		assert.Equal(t, "delivertest.invalid", res[0].Site)

		// The client stays usable: a failed transaction is reset.
		res, err = h.s.SendNetSMTP(t.Context(), c, host, msg("nobody@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Bounced, res[0].Status)
		res, err = h.s.SendNetSMTP(t.Context(), c, host, msg("c@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, res[0].Status)
		require.NoError(t, c.Quit())
		assert.Equal(t, 2, srv.MessageCount())

		_, err = h.s.SendNetSMTP(t.Context(), nil, host, msg("c@example.test"))
		assert.ErrorIs(t, err, ErrInvalidMessage)
		_, err = h.s.SendNetSMTP(t.Context(), c, host, msg("bad"))
		assert.ErrorIs(t, err, ErrInvalidAddress)
		h.close()
	})
}

func TestSendNetSMTPWatchdog(t *testing.T) {
	tests := []struct {
		name     string
		fault    delivertest.Fault
		timeout  time.Duration // ctx; 0: none
		elapsed  time.Duration
		possibly bool
	}{
		{"mail hang hits the MAIL timeout", delivertest.Fault{Step: delivertest.StepMail, Action: delivertest.ActionHang}, 0, DefaultMailTimeout, false},
		{"dot hang hits the DATA end timeout", delivertest.Fault{Step: delivertest.StepDot, Action: delivertest.ActionHang}, 0, DefaultDataEndTimeout, true},
		{"ctx ends first", delivertest.Fault{Step: delivertest.StepRcpt, Action: delivertest.ActionHang}, time.Minute, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{tt.fault}})
				h := newHarness(t, srv, nil)
				c := netsmtpClient(t, srv)
				ctx := t.Context()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				start := time.Now()
				res, err := h.s.SendNetSMTP(ctx, c, "mx.example.test", msg("a@example.test"))
				require.NoError(t, err)
				assert.Equal(t, tt.elapsed, time.Since(start))
				assert.Equal(t, Deferred, res[0].Status, "%+v", res[0])
				assert.Equal(t, tt.possibly, res[0].PossiblyDelivered)
				c.Close()
				h.close()
			})
		})
	}
}

func TestSendMail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Recipients: map[string]delivertest.Reply{
			"nobody@example.test": {Code: 550, Enhanced: "5.1.1", Text: "No such user"},
		}})
		sendMailDial = pipeDial(nil)
		defer func() { sendMailDial = nil }()

		err := SendMail(srv.Addr(), nil, "sender@example.org", []string{"a@example.test"}, []byte("Subject: hi\n\nHello\n"))
		require.NoError(t, err)
		require.Equal(t, 1, srv.MessageCount())

		err = SendMail(srv.Addr(), nil, "sender@example.org", []string{"a@example.test", "nobody@example.test"}, []byte("Subject: hi\n\nHello\n"))
		var se *SendError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, Delivered, se.Results[0].Status)
		assert.Equal(t, Bounced, se.Results[1].Status)
		r, ok := smtpcode.FromError(err)
		require.True(t, ok)
		assert.Equal(t, 550, r.Code)
		assert.Contains(t, err.Error(), "<nobody@example.test> bounced")

		// Credentials never go in clear to a remote host.
		err = SendMail(srv.Addr(), netsmtp.PlainAuth("", "alice", "secret", "pipe"), "sender@example.org", []string{"a@example.test"}, []byte("x\n"))
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 454, se.Results[0].Reply.Code)

		err = SendMail("no-port", nil, "sender@example.org", []string{"a@example.test"}, []byte("x\n"))
		require.Error(t, err)
		err = SendMail(srv.Addr(), nil, "sender@example.org", nil, []byte("x\n"))
		require.True(t, errors.Is(err, ErrNoRecipients))
		assert.Equal(t, 2, srv.MessageCount())
	})
}

// SendNetSMTP waits for a connection slot like Send (regression: the wait
// used to call a nil wake-up hook).
func TestSendNetSMTPWaitsForSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) { c.Governor = gov; c.MaxWait = -1 })
		h.gov = gov
		held, err := gov.Acquire(t.Context(), connKeys(netip.Addr{}, "delivertest.invalid")...)
		require.NoError(t, err)
		go func() {
			time.Sleep(time.Minute)
			held.Release()
		}()
		c := netsmtpClient(t, srv)
		host := strings.Split(srv.Addr(), ":")[0]
		start := time.Now()
		res, err := h.s.SendNetSMTP(t.Context(), c, host, msg("a@example.test"))
		require.NoError(t, err)
		assert.Equal(t, Delivered, res[0].Status, "%+v", res[0])
		assert.Equal(t, time.Minute, time.Since(start))
		require.NoError(t, c.Quit())
		h.close()
	})
}

// SendNetSMTP gives the message's unit on Message.Keys back too when the
// message is not sent.
func TestSendNetSMTPGivesKeysBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{Faults: []delivertest.Fault{{
			Step: delivertest.StepMail, Action: delivertest.ActionReply, Times: 1,
			Reply: delivertest.Reply{Code: 451, Enhanced: "4.3.0", Text: "Try later"},
		}}})
		pol := DefaultPolicy()
		pol.Patterns = append([]governor.Pattern{{Match: "mailbox:*", Limits: governor.Limits{Quota: governor.PerDay(1, time.UTC)}}}, pol.Patterns...)
		gov, err := governor.New(governor.Config{Policy: pol})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) { c.Governor = gov })
		h.gov = gov
		c := netsmtpClient(t, srv)
		host := strings.Split(srv.Addr(), ":")[0]
		var statuses []Status
		for range 3 {
			m := msg("a@example.test")
			m.Keys = []string{"mailbox:sender@example.org"}
			res, err := h.s.SendNetSMTP(t.Context(), c, host, m)
			require.NoError(t, err)
			statuses = append(statuses, res[0].Status)
		}
		assert.Equal(t, []Status{Deferred, Delivered, Deferred}, statuses)
		assert.Equal(t, 1, srv.MessageCount())
		require.NoError(t, c.Quit())
		h.close()
	})
}
