package main

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The quickstart's core in fake time: every message ends in exactly one
// outcome, the receivers hold what we counted as delivered, and the
// Gmail-like receiver never sees more than its 2 connections once it has
// refused one.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 90
		sent := 0
		s, err := run(t.Context(), options{Messages: n, Workers: 10, Latency: 5 * time.Millisecond, MaxWait: time.Minute},
			func() { sent++ })
		require.NoError(t, err)
		assert.Equal(t, n, sent, "progress called once per message")

		total := 0
		for _, r := range s.Receivers {
			assert.Equal(t, r.Sent, r.Delivered+r.Deferred+r.Bounced, "%s: every message accounted for", r.Domain)
			assert.Equal(t, r.Delivered, r.Received, "%s: the receiver holds what we counted as delivered", r.Domain)
			assert.Zero(t, r.Bounced, r.Domain)
			total += r.Sent
		}
		assert.Equal(t, n, total)

		gmail := s.Receivers[0]
		require.Equal(t, "gmail.test", gmail.Domain)
		require.GreaterOrEqual(t, gmail.MaxConnsAfter, 0, "10 workers trip the cap of 2 at least once")
		assert.Greater(t, gmail.MaxConns, 2)
		assert.LessOrEqual(t, gmail.MaxConnsAfter, 2, "above the cap after the first 421 4.4.5")

		var out bytes.Buffer
		s.print(&out)
		assert.Contains(t, out.String(), "gmail.test")
		assert.Contains(t, out.String(), "messages/s")
	})
}
