package policytest

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver"
	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// Our sending IP, as the receivers see it.
var source = netip.MustParseAddr("192.0.2.1")

// newReceiver starts an in-memory receiver; call it inside the bubble.
func newReceiver(t *testing.T, cfg delivertest.Config) *delivertest.Server {
	t.Helper()
	cfg.StartTLS = false // TLS works in a bubble too, but costs CPU for nothing here
	srv, err := delivertest.NewPipeServer(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// newSender returns a Sender that delivers every domain to srv, from
// source, under policy. The site is "google.com", as deliver computes it for
// gmail.com and every Google Workspace domain from their MX hosts.
func newSender(t *testing.T, srv *delivertest.Server, policy *governor.Policy) *deliver.Sender {
	t.Helper()
	s, err := deliver.New(deliver.Config{
		HelloName: "sender.example.org",
		SourceIP:  source,
		Routes:    map[string][]string{"*": {srv.Addr()}},
		SiteKey:   func(string, []string) string { return deliver.SiteGoogle },
		Dial:      delivertest.Dialer{}.DialSource,
		TLS:       deliver.TLSNone,
		Policy:    policy,
	})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(t.Context()) })
	return s
}

func message(from, to string, keys ...string) *deliver.Message {
	return &deliver.Message{
		From: from,
		To:   []string{to},
		Data: []byte("Subject: hello\r\n\r\nHi.\r\n"),
		Keys: keys,
	}
}

// sendAll sends n messages from 20 goroutines at once and returns how many
// were delivered.
func sendAll(t *testing.T, s *deliver.Sender, n, workers int) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	delivered := 0
	for g := range workers {
		wg.Go(func() {
			for i := g; i < n; i += workers {
				res, err := s.Send(t.Context(), message("news@example.org", fmt.Sprintf("user%d@gmail.com", i)))
				if assert.NoError(t, err) && res[0].Status == deliver.Delivered {
					mu.Lock()
					delivered++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return delivered
}

// "My Gmail policy never opens a third connection": the built-in policy
// allows 2 connections per source IP to Google, so a Gmail-like receiver
// hammered by 20 goroutines never refuses one.
func TestGmailPolicyNeverOpensAThirdConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gmail := delivertest.Gmail()
		gmail.Limits.MessageRate = delivertest.Rate{} // this test is about connections
		gmail.Latency = delivertest.EveryCommand(100 * time.Millisecond)
		srv := newReceiver(t, gmail)
		s := newSender(t, srv, deliver.DefaultPolicy())

		assert.Equal(t, 200, sendAll(t, s, 200, 20))
		require.NoError(t, s.Close(t.Context()))
		synctest.Wait() // let the receiver record the QUITs

		assert.Equal(t, 2, srv.MaxConcurrency(source.String()), "connections held at once")
		assert.Zero(t, srv.Throttled(source.String()), "throttling replies")
		assert.Equal(t, 200, srv.MessageCount())
	})
}

// "A wide policy learns Gmail's limit from its first refusal": allowed 10
// connections, the sender is refused a third one (421 4.4.5) and never
// holds more than 2 after that; every message still goes out.
func TestWidePolicyLearnsFromTheFirstRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gmail := delivertest.Gmail()
		gmail.Limits.MessageRate = delivertest.Rate{}
		gmail.Latency = delivertest.EveryCommand(100 * time.Millisecond)
		srv := newReceiver(t, gmail)
		wide := &governor.Policy{Patterns: []governor.Pattern{
			{Match: "ip:*|site:*", Limits: governor.Limits{MaxConcurrency: 10}},
		}}
		s := newSender(t, srv, wide)

		assert.Equal(t, 200, sendAll(t, s, 200, 10))
		require.NoError(t, s.Close(t.Context()))
		synctest.Wait()

		first, ok := srv.FirstReply(delivertest.CauseConcurrency)
		require.True(t, ok, "Gmail refused a connection")
		assert.Equal(t, "4.4.5", first.Enhanced)
		assert.LessOrEqual(t, srv.MaxConcurrencyAfter(source.String(), first), 2,
			"connections held at once after the first 421 4.4.5")
		assert.Equal(t, 200, srv.MessageCount())
	})
}

// "My 2/day mailbox quota defers the third message to tomorrow": a cold
// mailbox may send 2 messages a day. The third Send comes back Deferred,
// not attempted, with RetryAt at the next midnight; at that time it goes.
func TestMailboxQuotaDefersTheThirdMessageToTomorrow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newReceiver(t, delivertest.Config{})
		policy := deliver.DefaultPolicy()
		policy.Patterns = append([]governor.Pattern{
			{Match: "mailbox:*", Limits: governor.Limits{Quota: governor.PerDay(2, time.UTC)}},
		}, policy.Patterns...)
		s := newSender(t, srv, policy)

		// The bubble's clock starts at midnight UTC, 1 January 2000; start
		// the day's sending at 09:00.
		time.Sleep(9 * time.Hour)
		tomorrow := time.Now().Truncate(24 * time.Hour).Add(24 * time.Hour)
		alice := "mailbox:alice@example.org"

		for i := range 2 {
			res, err := s.Send(t.Context(), message("alice@example.org", fmt.Sprintf("lead%d@example.com", i), alice))
			require.NoError(t, err)
			assert.Equal(t, deliver.Delivered, res[0].Status, "message %d", i)
		}
		res, err := s.Send(t.Context(), message("alice@example.org", "lead2@example.com", alice))
		require.NoError(t, err)
		third := res[0]
		assert.Equal(t, deliver.Deferred, third.Status)
		assert.Zero(t, third.Attempts, "a quota wait is not an attempt")
		assert.Equal(t, tomorrow, third.RetryAt, "retry at the next midnight")
		assert.Equal(t, 2, srv.MessageCount(), "nothing went on the wire for the third")

		// Another mailbox is not held back by alice's quota.
		res, err = s.Send(t.Context(), message("bob@example.org", "lead3@example.com", "mailbox:bob@example.org"))
		require.NoError(t, err)
		assert.Equal(t, deliver.Delivered, res[0].Status)

		// A queue retries at RetryAt: the new day has a fresh quota.
		time.Sleep(time.Until(third.RetryAt))
		res, err = s.Send(t.Context(), message("alice@example.org", "lead2@example.com", alice))
		require.NoError(t, err)
		assert.Equal(t, deliver.Delivered, res[0].Status)
		assert.Equal(t, 4, srv.MessageCount())
	})
}

// "Nothing goes out of hours": a send window from 09:00 to 17:00 defers
// a message sent at 20:00 to 09:00 the next day.
func TestSendWindowDefersToNineOClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newReceiver(t, delivertest.Config{})
		policy := deliver.DefaultPolicy()
		policy.Patterns = append([]governor.Pattern{{
			Match:  "tenant:*",
			Limits: governor.Limits{Window: governor.Window{Start: 9 * time.Hour, End: 17 * time.Hour, Location: time.UTC}},
		}}, policy.Patterns...)
		s := newSender(t, srv, policy)

		time.Sleep(20 * time.Hour) // 20:00
		res, err := s.Send(t.Context(), message("alice@example.org", "lead@example.com", "tenant:acme"))
		require.NoError(t, err)
		assert.Equal(t, deliver.Deferred, res[0].Status)
		assert.Equal(t, time.Date(2000, 1, 2, 9, 0, 0, 0, time.UTC), res[0].RetryAt.UTC())
		assert.Zero(t, srv.MessageCount())
	})
}
