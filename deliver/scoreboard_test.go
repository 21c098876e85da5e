package deliver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// scoreboard runs Postfix's SCHEDULER_README experiment in fake time: a
// receiver capped at capConns connections answering 421 4.4.5 beyond, a
// sender whose policy allows allowed, n messages with a per-command
// latency, fed by enough goroutines to use every connection. Deferred
// messages are requeued at their RetryAt, as a queue would.
func scoreboard(t *testing.T, capConns, allowed, n int, latency time.Duration) (throttledShare, meanConc, vsOptimum float64) {
	cfg := delivertest.Config{
		Limits:      delivertest.Limits{MaxConnections: capConns},
		Latency:     delivertest.EveryCommand(latency),
		DiscardData: true,
	}
	srv := newPipeServer(t, cfg)
	gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: allowed}}})
	require.NoError(t, err)
	h := newHarness(t, srv, func(c *Config) { c.Governor = gov })
	h.gov = gov

	queue := make(chan *Message, n)
	for i := range n {
		queue <- msg(fmt.Sprintf("r%d@example.test", i))
	}
	var done, requeued atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 * allowed {
		wg.Go(func() {
			for {
				var m *Message
				select {
				case m = <-queue:
				default:
					return
				}
				res, err := h.s.Send(t.Context(), m)
				require.NoError(t, err)
				switch r := res[0]; r.Status {
				case Delivered:
					done.Add(1)
				case Deferred:
					requeued.Add(1)
					time.Sleep(time.Until(r.RetryAt))
					m.Attempt++
					queue <- m
				default:
					t.Errorf("bounced: %+v", r)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	synctest.Wait() // let the receiver finish its record
	require.Equal(t, int64(n), done.Load())
	// Per-connection throughput: MAIL, RCPT and the final dot each cost one
	// latency (delivertest answers DATA's 354 at once; EHLO and the
	// greeting are amortized over the connection's messages).
	optimum := time.Duration(n) * 3 * latency / time.Duration(capConns)
	throttledShare = float64(srv.Throttled(delivertest.DefaultIdentity)) / float64(n)
	meanConc = srv.MeanConcurrency(delivertest.DefaultIdentity, start, time.Now())
	vsOptimum = float64(elapsed) / float64(optimum)
	t.Logf("cap %d, allowed %d, %d messages: %.2f%% met a throttling reply (%d), mean concurrency %.2f, completion %v = %.0f%% of the optimum %v; %d requeued",
		capConns, allowed, n, 100*throttledShare, srv.Throttled(delivertest.DefaultIdentity), meanConc, elapsed, 100*vsOptimum, optimum, requeued.Load())
	h.close()
	return
}

// The scoreboard figures 1 (Postfix: cap 5, allowed 20, 2,000
// messages) and 2 (Gmail: cap 2, starting concurrency 10). Run with -v to
// see them.
func TestScoreboard(t *testing.T) {
	for _, tt := range []struct {
		name             string
		capConns, allowd int
	}{
		{"postfix", 5, 20},
		{"gmail", 2, 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				share, mean, vs := scoreboard(t, tt.capConns, tt.allowd, 2000, 10*time.Millisecond)
				assert.Less(t, share, 0.02)
				assert.GreaterOrEqual(t, mean, 0.9*float64(tt.capConns))
				assert.Less(t, vs, 1.15)
			})
		})
	}
}
