package main

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tiny versions of scenarios 1 and 2 in fake time: the code runs end to
// end and its figures are consistent. The goals themselves are the
// program's business (go run ./examples/scoreboard), not the test's.
func TestCongestionScenarios(t *testing.T) {
	for _, sc := range []congestion{
		{Name: "postfix", Cap: 5, Allowed: 20, Workers: 20, Messages: 100, Latency: 10 * time.Millisecond},
		{Name: "gmail", Cap: 2, Allowed: 10, Workers: 10, Messages: 60, Latency: 10 * time.Millisecond},
	} {
		t.Run(sc.Name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				perConn, err := perConnection(t.Context(), 20, sc.Latency)
				require.NoError(t, err)
				// MAIL, RCPT and the final dot each wait one latency; DATA's
				// 354 comes at once; the greeting and EHLO are amortized.
				assert.InDelta(t, 1/(3*sc.Latency.Seconds()), perConn, 3)

				r, err := runCongestion(t.Context(), sc, perConn)
				require.NoError(t, err)
				assert.Equal(t, sc.Messages, r.Delivered+r.Bounced)
				assert.Equal(t, sc.Messages, r.Delivered)
				assert.Greater(t, r.MeanConcurrency, 0.0)
				assert.LessOrEqual(t, r.MeanConcurrency, float64(sc.Cap), "refused connections are not counted")
				assert.Greater(t, r.MaxConcurrency, sc.Cap, "the sender starts above the cap")
				assert.Positive(t, r.Optimum)
				assert.GreaterOrEqual(t, r.VsOptimum(), 0.95, "nothing beats cap x one connection's throughput")
				t.Logf("%s: %.2f%% throttled, mean concurrency %.2f, %.0f%% of the optimum",
					sc.Name, 100*r.ThrottledShare(), r.MeanConcurrency, 100*r.VsOptimum())

				var b board
				b.addCongestion(r)
				var out bytes.Buffer
				b.print(&out)
				assert.Contains(t, out.String(), "mean concurrency at the receiver")
			})
		})
	}
}

// A tiny scenario 3 over loopback TCP: both loops deliver everything.
func TestThroughput(t *testing.T) {
	r, err := runThroughput(t.Context(), 200, 2, 1)
	require.NoError(t, err)
	assert.Positive(t, r.Raw)
	assert.Positive(t, r.Sluice)
}

func TestBoardVerdicts(t *testing.T) {
	var b board
	b.add("s", "met", "1", "< 2", true)
	b.add("", "missed", "3", "< 2", false)
	var out bytes.Buffer
	b.print(&out)
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	require.Len(t, lines, 3)
	assert.True(t, bytes.HasSuffix(lines[1], []byte("PASS")))
	assert.True(t, bytes.HasSuffix(lines[2], []byte("MISS")))
}
