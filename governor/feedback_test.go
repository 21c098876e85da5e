package governor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// receiver is a simulated SMTP receiver that refuses a connection when it
// already has cap open ones (Gmail's 421 4.4.5).
type receiver struct {
	mu       sync.Mutex
	cap      int
	open     int
	maxOpen  int
	refusals []time.Duration
}

func (r *receiver) connect(since time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open >= r.cap {
		r.refusals = append(r.refusals, since)
		return false
	}
	r.open++
	r.maxOpen = max(r.maxOpen, r.open)
	return true
}

func (r *receiver) close() {
	r.mu.Lock()
	r.open--
	r.mu.Unlock()
}

func TestAIMDConvergesToReceiverCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const key = "ip:203.0.113.7|site:google.com"
		g := newGov(t, &Policy{Default: Limits{
			MaxConcurrency: 10,
			Adaptive:       Adaptive{InitialConcurrency: PostfixInitialConcurrency},
		}})
		rcv := &receiver{cap: 2}
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for range 10 { // ten workers want to send at once
			wg.Go(func() {
				for ctx.Err() == nil {
					p, err := g.Acquire(ctx, key)
					if err != nil {
						return
					}
					if !rcv.connect(time.Since(start)) {
						assert.NoError(t, g.Feedback(key, Signal{Kind: Congestion, Started: p.Acquired(), Reason: "421 4.4.5"}))
						p.Release()
						time.Sleep(30 * time.Second)
						continue
					}
					time.Sleep(2 * time.Second) // one delivery
					assert.NoError(t, g.Feedback(key, Signal{Kind: Success, Started: p.Acquired()}))
					rcv.close()
					p.Release()
				}
			})
		}
		// Sample the effective concurrency every 10 s.
		var samples []int
		for time.Since(start) < 30*time.Minute {
			time.Sleep(10 * time.Second)
			ks, err := g.Snapshot()
			require.NoError(t, err)
			samples = append(samples, ks[0].Concurrency)
		}
		wg.Wait()

		late := samples[len(samples)/6:] // after the first 5 minutes
		at2 := 0
		for _, c := range late {
			if c == 2 {
				at2++
			}
		}
		assert.GreaterOrEqual(t, float64(at2)/float64(len(late)), 0.95, "samples %v", samples)
		var lateRefusals int
		for _, r := range rcv.refusals {
			if r > 5*time.Minute {
				lateRefusals++
			}
		}
		// After convergence only the probe every ProbeAfter (10 min) is refused.
		assert.LessOrEqual(t, lateRefusals, 3, "refusals at %v", rcv.refusals)
		ks, _ := g.Snapshot()
		assert.Equal(t, 2, ks[0].Concurrency)
		assert.Equal(t, 0, ks[0].InFlight)
	})
}

func TestCongestionOncePerFailureRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 8}})
		var ps []Permit
		for range 8 {
			p, err := g.Acquire(t.Context(), "k")
			require.NoError(t, err)
			ps = append(ps, p)
		}
		time.Sleep(time.Second)
		for _, p := range ps { // eight refusals from work started together: one run
			require.NoError(t, g.Feedback("k", Signal{Kind: Congestion, Started: p.Acquired()}))
		}
		ks, _ := g.Snapshot()
		assert.Equal(t, 4, ks[0].Concurrency)
		time.Sleep(time.Second)
		// Work started after the decrease starts a new run.
		require.NoError(t, g.Feedback("k", Signal{Kind: Congestion, Started: time.Now()}))
		ks, _ = g.Snapshot()
		assert.Equal(t, 2, ks[0].Concurrency)
		for _, p := range ps {
			p.Release()
		}
		// Never below 1.
		for range 5 {
			time.Sleep(time.Second)
			require.NoError(t, g.Feedback("k", Signal{Kind: Congestion}))
		}
		ks, _ = g.Snapshot()
		assert.Equal(t, 1, ks[0].Concurrency)
	})
}

func TestSuccessGrowsAdditivelyUpToCeiling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 4, Adaptive: Adaptive{InitialConcurrency: 1}}})
		conc := func() int { ks, _ := g.Snapshot(); return ks[0].Concurrency }
		require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
		assert.Equal(t, 2, conc(), "1 + 1/1")
		require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
		assert.Equal(t, 2, conc(), "2 + 1/2")
		require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
		assert.Equal(t, 2, conc(), "2.5 + 1/2.5")
		require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
		assert.Equal(t, 3, conc(), "2.9 + 1/2.9")
		for range 20 {
			require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
		}
		assert.Equal(t, 4, conc(), "never above MaxConcurrency")
	})
}

func TestFailureCohortSuspendsAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 3}})
		start := time.Now()
		for i := range 3 {
			if i == 1 {
				// A success in between restarts the count.
				require.NoError(t, g.Feedback("k", Signal{Kind: Success}))
			}
			require.NoError(t, g.Feedback("k", Signal{Kind: Failure, Reason: "connection refused"}))
		}
		_, d, err := g.TryAcquire("k")
		require.NoError(t, err)
		assert.True(t, d.OK, "two in a row are fewer than the cohort of 3")
		require.NoError(t, g.Feedback("k", Signal{Kind: Failure, Reason: "connection refused"}))
		_, d, err = g.TryAcquire("k")
		require.NoError(t, err)
		require.False(t, d.OK)
		assert.Equal(t, LimitSuspended, d.Limit)
		assert.Contains(t, d.Reason, "connection refused")
		assert.True(t, start.Add(DefaultSuspendFor).Equal(d.RetryAt))

		// A blocked Acquire is released by the cool-down's end.
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		assert.Equal(t, DefaultSuspendFor, time.Since(start))
		p.Release()

		// Explicit suspension, and Resume wakes a waiter at once.
		require.NoError(t, g.Suspend("k", time.Now().Add(time.Hour), "operator"))
		ks, _ := g.Snapshot()
		assert.True(t, time.Now().Add(time.Hour).Equal(ks[0].SuspendedUntil))
		done := make(chan time.Duration)
		go func() {
			_, err := g.Take(t.Context(), "k")
			assert.NoError(t, err)
			done <- time.Since(start)
		}()
		time.Sleep(10 * time.Minute)
		require.NoError(t, g.Resume("k"))
		assert.Equal(t, DefaultSuspendFor+10*time.Minute, <-done)
	})
}

func TestRateLimitedLowersRateForAWhile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{
			Default: Limits{Rate: 1, Adaptive: Adaptive{RateFor: time.Minute}},
			Keys:    map[string]Limits{"free": {}},
		})
		rateNow := func() rate.Limit { ks, _ := g.Snapshot(); return ks[0].Rate }
		_, err := g.Take(t.Context(), "k")
		require.NoError(t, err)
		assert.InDelta(t, 1, float64(rateNow()), 1e-9)
		require.NoError(t, g.Feedback("k", Signal{Kind: RateLimited, Reason: "421 4.7.28"}))
		require.NoError(t, g.Feedback("k", Signal{Kind: RateLimited, Started: time.Now().Add(-time.Second)}))
		assert.InDelta(t, 0.5, float64(rateNow()), 1e-9, "halved once per run")
		start := time.Now()
		for range 3 {
			_, err := g.Take(t.Context(), "k")
			require.NoError(t, err)
		}
		assert.Equal(t, 5*time.Second, time.Since(start), "one every 2 s (the first token was due at 1 s)")
		time.Sleep(time.Minute)
		assert.InDelta(t, 1, float64(rateNow()), 1e-9, "restored")

		// A key without a rate pauses instead.
		require.NoError(t, g.Feedback("free", Signal{Kind: RateLimited}))
		d, err := g.TryTake("free")
		require.NoError(t, err)
		assert.Equal(t, LimitSuspended, d.Limit)
		assert.True(t, time.Now().Add(DefaultRatePause).Equal(d.RetryAt))
	})
}

func TestPolicyReplacementUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		var inFlight, peak atomic.Int64
		var limit atomic.Int64
		limit.Store(1)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for {
					p, err := g.Acquire(ctx, "k")
					if err != nil {
						return
					}
					n := inFlight.Add(1)
					assert.LessOrEqual(t, n, limit.Load())
					if n > peak.Load() {
						peak.Store(n)
					}
					time.Sleep(time.Second)
					inFlight.Add(-1)
					p.Release()
				}
			})
		}
		time.Sleep(time.Minute)
		assert.Equal(t, int64(1), peak.Load())
		// Widen: the 19 queued callers re-check at once.
		limit.Store(5)
		require.NoError(t, g.SetPolicy(&Policy{Default: Limits{MaxConcurrency: 5}}))
		time.Sleep(time.Minute + 500*time.Millisecond) // mid-hold, not at a hand-over instant
		assert.Equal(t, int64(5), peak.Load())
		ks, _ := g.Snapshot()
		assert.Equal(t, 5, ks[0].Concurrency)
		// Narrow: held slots stay held (no state dropped), new grants wait.
		require.NoError(t, g.SetPolicy(&Policy{Default: Limits{MaxConcurrency: 2}}))
		ks, _ = g.Snapshot()
		assert.Equal(t, 5, ks[0].InFlight, "held slots kept across the change")
		time.Sleep(2 * time.Second) // the five finish
		limit.Store(2)
		peak.Store(0)
		time.Sleep(time.Minute)
		assert.Equal(t, int64(2), peak.Load())
		cancel()
		wg.Wait()
		ks, _ = g.Snapshot()
		assert.Zero(t, ks[0].InFlight)
		assert.Zero(t, ks[0].Waiting)
	})
}
