package redisstore_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// countHook counts round trips to Redis: one per command, one per pipeline.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// countedGovernor is a Governor on a Redis store whose client counts round
// trips; every key has MaxConcurrency max.
func countedGovernor(tb testing.TB, addr string, max int) (*governor.Governor, *countHook, *redis.Client) {
	tb.Helper()
	c := newClient(tb, addr)
	h := &countHook{}
	c.AddHook(h)
	st, err := redisstore.New(c, redisstore.Options{Prefix: randomPrefix()})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = st.Close() })
	g, err := governor.New(governor.Config{Store: st, Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: max, Rate: 1e9, Burst: 1000}}})
	require.NoError(tb, err)
	return g, h, c
}

func TestRoundTrips(t *testing.T) {
	g, h, _ := countedGovernor(t, needRedis(t), 2)
	ctx := context.Background()
	p, err := g.Acquire(ctx, "ip:1", "site:gmail", "ip:1|site:gmail") // loads the script
	require.NoError(t, err)
	p.Release()
	for range 10 {
		n := h.n.Load()
		p, err := g.Acquire(ctx, "ip:1", "site:gmail", "ip:1|site:gmail")
		require.NoError(t, err)
		require.Equal(t, int64(1), h.n.Load()-n, "acquire of 3 keys")
		n = h.n.Load()
		p.Release()
		require.Equal(t, int64(1), h.n.Load()-n, "release")
		n = h.n.Load()
		_, err = g.Take(ctx, "ip:1", "mailbox:a")
		require.NoError(t, err)
		require.Equal(t, int64(1), h.n.Load()-n, "take")
	}
}

// BenchmarkAcquireRelease: one Acquire and Release of three keys on Redis,
// with the round trips it costs.
func BenchmarkAcquireRelease(b *testing.B) {
	g, h, _ := countedGovernor(b, needRedis(b), 2)
	ctx := context.Background()
	p, err := g.Acquire(ctx, "ip:1", "site:gmail", "ip:1|site:gmail")
	require.NoError(b, err)
	p.Release()
	n0 := h.n.Load()
	b.ResetTimer()
	for b.Loop() {
		p, err := g.Acquire(ctx, "ip:1", "site:gmail", "ip:1|site:gmail")
		if err != nil {
			b.Fatal(err)
		}
		p.Release()
	}
	b.ReportMetric(float64(h.n.Load()-n0)/float64(b.N), "roundtrips/op")
}

// BenchmarkParallel32 compares 32 goroutines doing Store operations with
// the same goroutines doing plain INCR (one round trip) on the same Redis,
// interleaved in rounds so that both see the same machine load; it reports
// both rates and their ratio.
func BenchmarkParallel32(b *testing.B) {
	addr := needRedis(b)
	c := newClient(b, addr)
	incrKey := randomPrefix()
	incr := func(ctx context.Context, _ int) error { return c.Incr(ctx, incrKey).Err() }
	// burst runs n operations from 32 goroutines and returns the time taken.
	burst := func(b *testing.B, n int, op func(ctx context.Context, w int) error) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		start := time.Now()
		for w := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for next.Add(1) <= int64(n) {
					if err := op(ctx, w); err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	run := func(b *testing.B, h *countHook, op func(ctx context.Context, w int) error) {
		const round = 500
		var tOp, tIncr time.Duration
		n0 := h.n.Load()
		b.ResetTimer()
		for done := 0; done < b.N; done += round {
			n := min(round, b.N-done)
			tIncr += burst(b, n, incr)
			tOp += burst(b, n, op)
		}
		b.StopTimer()
		b.ReportMetric(float64(h.n.Load()-n0)/float64(b.N), "roundtrips/op")
		b.ReportMetric(float64(b.N)/tOp.Seconds(), "ops/s")
		b.ReportMetric(float64(b.N)/tIncr.Seconds(), "INCR-ops/s")
		b.ReportMetric(tIncr.Seconds()/tOp.Seconds(), "ratio-to-INCR")
	}
	b.Run("Take", func(b *testing.B) {
		g, h, _ := countedGovernor(b, addr, 2)
		_, _ = g.Take(context.Background(), "warm")
		run(b, h, func(ctx context.Context, w int) error {
			_, err := g.Take(ctx, "site:"+strconv.Itoa(w%8))
			return err
		})
	})
	b.Run("AcquireRelease", func(b *testing.B) {
		g, h, _ := countedGovernor(b, addr, 2)
		p, _ := g.Acquire(context.Background(), "warm")
		p.Release()
		run(b, h, func(ctx context.Context, w int) error {
			p, err := g.Acquire(ctx, "ip:"+strconv.Itoa(w%16))
			p.Release()
			return err
		})
	})
}

// BenchmarkWakeup measures the delay between a Release in one store (one
// process) and the return of an Acquire blocked on the same key in another
// store, woken through pub/sub.
func BenchmarkWakeup(b *testing.B) {
	addr := needRedis(b)
	prefix := randomPrefix()
	pol := &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}
	sa := newStore(b, addr, redisstore.Options{Prefix: prefix})
	sb := newStore(b, addr, redisstore.Options{Prefix: prefix})
	ga, err := governor.New(governor.Config{Store: sa, Policy: pol})
	require.NoError(b, err)
	gb, err := governor.New(governor.Config{Store: sb, Policy: pol})
	require.NoError(b, err)
	ctx := context.Background()
	delays := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		pa, err := ga.Acquire(ctx, "k")
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan time.Time, 1)
		var werr error
		go func() {
			// bounded: a lost wake-up fails the benchmark instead of hanging it
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			pb, err := gb.Acquire(wctx, "k")
			werr = err
			got <- time.Now()
			pb.Release()
		}()
		for { // until b is queued (it then waits on its Wake channel only)
			ks, err := sa.Snapshot(ctx, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			if len(ks) == 1 && ks[0].Waiting == 1 {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		released := time.Now()
		pa.Release()
		delays = append(delays, (<-got).Sub(released))
		if werr != nil {
			b.Fatal("waiter:", werr)
		}
		for { // b released: the slot is free again
			ks, _ := sa.Snapshot(ctx, time.Now())
			if len(ks) == 1 && ks[0].InFlight == 0 {
				break
			}
		}
	}
	b.StopTimer()
	slices.Sort(delays)
	var sum time.Duration
	for _, d := range delays {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(delays)), "wake-µs-mean")
	b.ReportMetric(float64(delays[len(delays)/2].Microseconds()), "wake-µs-p50")
	b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds()), "wake-µs-p99")
	b.ReportMetric(float64(delays[len(delays)-1].Microseconds()), "wake-µs-max")
}
