package governor

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// viaStore makes newGov put a MemoryStore behind the Store interface, so
// that TestBehaviourViaStore runs the behaviour tests through the Store path
// too (tests in this package do not run in parallel).
var viaStore bool

func newGov(t *testing.T, p *Policy) *Governor {
	t.Helper()
	cfg := Config{Policy: p, Rand: rand.NewPCG(1, 2)}
	if viaStore {
		cfg.Store = NewMemoryStore(0)
	}
	g, err := New(cfg)
	require.NoError(t, err)
	return g
}

// TestBehaviourViaStore runs the behaviour tests against the Store interface
// (the reference MemoryStore), as a Redis store's would run.
func TestBehaviourViaStore(t *testing.T) {
	viaStore = true
	defer func() { viaStore = false }()
	for name, test := range map[string]func(*testing.T){
		"RateOnePerMinute":     TestRateOnePerMinuteBurstOne,
		"RateFIFO":             TestRateConcurrentCallersGetFIFOReservations,
		"DeadlineAtOnce":       TestTakeFailsAtOnceWhenTokenComesAfterDeadline,
		"CancelGivesTokenBack": TestCancelledReservationGivesTokenBack,
		"QuotaAcrossMidnight":  TestQuotaTwoPerDayAcrossMidnight,
		"SendWindow":           TestSendWindowOpensAtNine,
		"Jitter":               TestJitterSpreadsHundredSends,
		"AllOrNothing":         TestConcurrencyAllOrNothing,
		"FIFO":                 TestFIFOPerKey,
		"CancelLeavesNothing":  TestAcquireCancelledLeavesNothing,
		"AIMD":                 TestAIMDConvergesToReceiverCap,
		"CongestionOncePerRun": TestCongestionOncePerFailureRun,
		"SuccessGrows":         TestSuccessGrowsAdditivelyUpToCeiling,
		"CohortAndResume":      TestFailureCohortSuspendsAndResume,
		"RateLimited":          TestRateLimitedLowersRateForAWhile,
		"PolicyReplacement":    TestPolicyReplacementUnderLoad,
		"ManyKeys":             TestManyKeys,
		"CancelledWaiter":      TestCancelledWaiterPassesItsTurnOn,
		"Snapshot":             TestSnapshotFields,
	} {
		t.Run(name, test)
	}
}

func TestRateOnePerMinuteBurstOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{Rate: rate.Every(time.Minute), Burst: 1}})
		start := time.Now()
		var at []time.Duration
		for range 3 {
			d, err := g.Take(t.Context(), "mailbox:a")
			require.NoError(t, err)
			require.True(t, d.OK)
			at = append(at, time.Since(start))
		}
		assert.Equal(t, []time.Duration{0, time.Minute, 2 * time.Minute}, at)
	})
}

func TestRateConcurrentCallersGetFIFOReservations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{Rate: rate.Every(time.Minute), Burst: 1}})
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				_, err := g.Take(t.Context(), "k")
				assert.NoError(t, err)
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		assert.ElementsMatch(t, []time.Duration{0, time.Minute, 2 * time.Minute}, at)
	})
}

func TestTakeFailsAtOnceWhenTokenComesAfterDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{Rate: rate.Every(time.Minute)}})
		_, err := g.Take(t.Context(), "k")
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		d, err := g.Take(ctx, "k")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var we *WaitError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, LimitRate, we.Decision.Limit)
		assert.True(t, start.Add(time.Minute).Equal(we.Decision.RetryAt))
		assert.False(t, d.OK)
		assert.Zero(t, time.Since(start), "fails at once")
		// Nothing was reserved: the next token is still due at 1m.
		d, err = g.TryTake("k")
		require.NoError(t, err)
		assert.True(t, start.Add(time.Minute).Equal(d.RetryAt))
	})
}

func TestCancelledReservationGivesTokenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{Rate: rate.Every(time.Minute)}})
		start := time.Now()
		_, err := g.Take(t.Context(), "k")
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { _, err := g.Take(ctx, "k"); done <- err }()
		time.Sleep(10 * time.Second)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		// The reserved token (due at 1m) came back: the next Take gets it at 1m, not 2m.
		_, err = g.Take(t.Context(), "k")
		require.NoError(t, err)
		assert.Equal(t, time.Minute, time.Since(start))
	})
}

func TestQuotaTwoPerDayAcrossMidnight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		paris, err := time.LoadLocation("Europe/Paris")
		require.NoError(t, err)
		g := newGov(t, &Policy{Patterns: []Pattern{{Match: "mailbox:*", Limits: Limits{Quota: PerDay(2, paris)}}}})
		// Move to 23:00 Paris time.
		now := time.Now().In(paris)
		y, m, d := now.Date()
		eleven := time.Date(y, m, d, 23, 0, 0, 0, paris)
		if !eleven.After(now) {
			eleven = time.Date(y, m, d+1, 23, 0, 0, 0, paris)
		}
		time.Sleep(eleven.Sub(now))
		for range 2 {
			dec, err := g.TryTake("mailbox:alice@example.org")
			require.NoError(t, err)
			require.True(t, dec.OK)
		}
		dec, err := g.TryTake("mailbox:alice@example.org")
		require.NoError(t, err)
		require.False(t, dec.OK)
		assert.Equal(t, LimitQuota, dec.Limit)
		midnight := time.Date(eleven.Year(), eleven.Month(), eleven.Day()+1, 0, 0, 0, 0, paris)
		assert.True(t, midnight.Equal(dec.RetryAt), "retry at %v", dec.RetryAt)
		// Another mailbox has its own quota.
		dec, err = g.TryTake("mailbox:bob@example.org")
		require.NoError(t, err)
		assert.True(t, dec.OK)

		// A blocking Take waits until local midnight.
		dec, err = g.Take(t.Context(), "mailbox:alice@example.org")
		require.NoError(t, err)
		assert.True(t, midnight.Equal(time.Now()), "granted at %v", time.Now().In(paris))
		assert.Equal(t, time.Hour, dec.Waited)
		_, err = g.Take(t.Context(), "mailbox:alice@example.org")
		require.NoError(t, err)
		dec, err = g.TryTake("mailbox:alice@example.org")
		require.NoError(t, err)
		assert.False(t, dec.OK, "two used on the new day")
	})
}

func TestSendWindowOpensAtNine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ny, err := time.LoadLocation("America/New_York")
		require.NoError(t, err)
		win := Window{Start: 9 * time.Hour, End: 17 * time.Hour, Location: ny}
		g := newGov(t, &Policy{Default: Limits{Window: win}})
		now := time.Now().In(ny)
		y, m, d := now.Date()
		// Go to 06:30 local the next day.
		time.Sleep(time.Date(y, m, d+1, 6, 30, 0, 0, ny).Sub(now))
		dec, err := g.TryTake("k")
		require.NoError(t, err)
		require.False(t, dec.OK)
		assert.Equal(t, LimitWindow, dec.Limit)
		nine := time.Date(y, m, d+1, 9, 0, 0, 0, ny)
		assert.True(t, nine.Equal(dec.RetryAt))
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		assert.True(t, nine.Equal(time.Now()))
		assert.Equal(t, 150*time.Minute, p.Decision().Waited)
		assert.Equal(t, LimitWindow, p.Decision().Limit)
		p.Release()
		// After 17:00 it waits for the next day's 09:00.
		time.Sleep(8*time.Hour + time.Minute)
		dec, _ = g.TryTake("k")
		assert.True(t, time.Date(y, m, d+2, 9, 0, 0, 0, ny).Equal(dec.RetryAt))
	})
}

func TestWindowWrapsMidnightAndDays(t *testing.T) {
	base := time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC) // a Friday
	tests := []struct {
		name string
		w    Window
		now  time.Time
		want time.Time
	}{
		{"always", Window{}, base, base},
		{"before", Window{Start: 13 * time.Hour, End: 14 * time.Hour}, base, base.Add(time.Hour)},
		{"inside", Window{Start: 11 * time.Hour, End: 14 * time.Hour}, base, base},
		{"after", Window{Start: 9 * time.Hour, End: 10 * time.Hour}, base, base.Add(21 * time.Hour)},
		{"wrap-closed", Window{Start: 22 * time.Hour, End: 6 * time.Hour}, base, base.Add(10 * time.Hour)},
		{"wrap-open-early", Window{Start: 22 * time.Hour, End: 6 * time.Hour}, base.Add(-9 * time.Hour), base.Add(-9 * time.Hour)},
		{"weekdays-from-friday-evening", Window{Start: 9 * time.Hour, End: 17 * time.Hour, Days: []time.Weekday{time.Monday}}, base, base.Add(3*24*time.Hour - 3*time.Hour)},
		{"whole-day-saturday", Window{Days: []time.Weekday{time.Saturday}}, base, base.Add(12 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.True(t, tt.want.Equal(tt.w.NextOpen(tt.now)), "got %v", tt.w.NextOpen(tt.now))
			assert.Equal(t, tt.want.Equal(tt.now), tt.w.Open(tt.now))
		})
	}
}

func TestJitterSpreadsHundredSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{Jitter: 10 * time.Minute}})
		start := time.Now()
		var mu sync.Mutex
		var buckets [10]int
		var wg sync.WaitGroup
		var latest time.Duration
		for range 100 {
			wg.Go(func() {
				_, err := g.Take(t.Context(), "mailbox:a")
				assert.NoError(t, err)
				el := time.Since(start)
				mu.Lock()
				buckets[el/time.Minute]++
				latest = max(latest, el)
				mu.Unlock()
			})
		}
		wg.Wait()
		assert.Less(t, latest, 10*time.Minute)
		for i, n := range buckets {
			// Uniform over 10 buckets: 10 expected each; with the seeded
			// source the spread is fixed, every minute gets some.
			assert.Positive(t, n, "minute %d got none: %v", i, buckets)
			assert.Less(t, n, 25, "minute %d got %d: %v", i, n, buckets)
		}
	})
}

func TestConcurrencyAllOrNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		pa, err := g.Acquire(t.Context(), "a")
		require.NoError(t, err)
		_, d, err := g.TryAcquire("b", "a")
		require.NoError(t, err)
		assert.False(t, d.OK)
		assert.Equal(t, "a", d.Key)
		assert.Equal(t, LimitConcurrency, d.Limit)
		assert.True(t, d.RetryAt.IsZero())
		// b was not taken.
		pb, d, err := g.TryAcquire("b")
		require.NoError(t, err)
		require.True(t, d.OK)
		pb.Release()

		got := make(chan Permit)
		go func() {
			p, err := g.Acquire(t.Context(), "a", "b", "a")
			assert.NoError(t, err)
			got <- p
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("acquired while a is held")
		default:
		}
		pa.Release()
		pa.Release() // harmless
		p := <-got
		assert.Equal(t, time.Second, p.Decision().Waited)
		assert.True(t, p.Held())
		ks, _ := g.Snapshot()
		require.Len(t, ks, 2)
		assert.Equal(t, 1, ks[0].InFlight)
		assert.Equal(t, 1, ks[1].InFlight)
		p.Release()
		assert.False(t, p.Held())
		ks, _ = g.Snapshot()
		assert.Equal(t, 0, ks[0].InFlight+ks[1].InFlight)
	})
}

func TestFIFOPerKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		order := make(chan int, 5)
		var wg sync.WaitGroup
		defer wg.Wait()
		for i := range 5 {
			wg.Go(func() {
				p, err := g.Acquire(t.Context(), "k")
				assert.NoError(t, err)
				order <- i
				time.Sleep(time.Second)
				p.Release()
			})
			synctest.Wait() // queued in order
		}
		p.Release()
		for i := range 5 {
			assert.Equal(t, i, <-order)
		}
	})
}

func TestAcquireCancelledLeavesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err = g.Acquire(ctx, "k", "other")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var we *WaitError
		require.True(t, errors.As(err, &we))
		assert.Equal(t, LimitConcurrency, we.Decision.Limit)
		p.Release()
		ks, _ := g.Snapshot()
		for _, k := range ks {
			assert.Zero(t, k.InFlight, k.Key)
			assert.Zero(t, k.Waiting, k.Key)
		}
	})
}

func TestInvalidInput(t *testing.T) {
	_, err := New(Config{Policy: &Policy{Default: Limits{MaxConcurrency: -1}}})
	assert.ErrorIs(t, err, ErrInvalidPolicy)
	var pe *PolicyError
	assert.ErrorAs(t, err, &pe)
	_, err = New(Config{Policy: &Policy{Patterns: []Pattern{{Match: ""}}}})
	assert.ErrorIs(t, err, ErrInvalidPolicy)
	_, err = New(Config{Policy: &Policy{Default: Limits{Quota: Quota{Max: 2}}}})
	assert.ErrorIs(t, err, ErrInvalidPolicy, "rolling quota without a window")
	g := newGov(t, nil)
	_, err = g.Acquire(t.Context(), "")
	assert.ErrorIs(t, err, ErrInvalidKey)
	_, err = g.Take(t.Context(), "a", "")
	assert.ErrorIs(t, err, ErrInvalidKey)
	assert.ErrorIs(t, g.Feedback("", Signal{Kind: Success}), ErrInvalidKey)
	assert.ErrorIs(t, g.SetPolicy(&Policy{Default: Limits{Burst: -1}}), ErrInvalidPolicy)
	p, err := g.Acquire(t.Context())
	require.NoError(t, err)
	p.Release()
	var zero Permit
	zero.Release()
}

func TestPolicyResolution(t *testing.T) {
	p := &Policy{
		Default: Limits{MaxConcurrency: 1},
		Keys:    map[string]Limits{"site:google.com": {MaxConcurrency: 9}},
		Patterns: []Pattern{
			{Match: "*|site:google.com", Limits: Limits{MaxConcurrency: 2}},
			{Match: "ip:*", Limits: Limits{MaxConcurrency: 3}},
			{Match: "mailbox:?ob@*", Limits: Limits{MaxConcurrency: 4}},
		},
	}
	tests := map[string]int{
		"site:google.com":              9,
		"ip:1.2.3.4|site:google.com":   2,
		"ip:1.2.3.4":                   3,
		"mailbox:bob@example.org":      4,
		"mailbox:alice@example.org":    1,
		"ip:1.2.3.4|site:yahoo.com":    3,
		"site:google.com.evil.example": 1,
	}
	for k, want := range tests {
		assert.Equal(t, want, p.LimitsFor(k).MaxConcurrency, k)
	}
	assert.Equal(t, Limits{}, (*Policy)(nil).LimitsFor("x"))
}

func TestSnapshotFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{
			MaxConcurrency: 3, Rate: 1, Burst: 4, ConnectionRate: 2, ConnectionBurst: 2,
			Quota: Quota{Max: 10, Window: time.Hour},
		}})
		start := time.Now()
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		for range 3 {
			_, err := g.Take(t.Context(), "k")
			require.NoError(t, err)
		}
		require.NoError(t, g.Feedback("k", Signal{Kind: Success, Reason: "250 ok"}))
		ks, err := g.Snapshot()
		require.NoError(t, err)
		require.Len(t, ks, 1)
		s := ks[0]
		assert.Equal(t, "k", s.Key)
		assert.Equal(t, 3, s.Limits.MaxConcurrency)
		assert.Equal(t, 1, s.InFlight)
		assert.Equal(t, 3, s.Concurrency)
		assert.InDelta(t, 1, float64(s.Rate), 1e-9)
		assert.InDelta(t, 1, s.Tokens, 1e-9, "4 - 3")
		assert.InDelta(t, 1, s.ConnectionTokens, 1e-9, "2 - 1")
		assert.Equal(t, 3, s.QuotaUsed)
		assert.True(t, start.Add(time.Hour).Equal(s.QuotaResets))
		assert.Equal(t, "250 ok", s.LastReason)
		assert.True(t, s.SuspendedUntil.IsZero())
		p.Release()
		time.Sleep(2 * time.Second)
		ks, _ = g.Snapshot()
		assert.InDelta(t, 3, ks[0].Tokens, 1e-9, "refilled at 1/s")
		assert.Zero(t, ks[0].InFlight)
	})
}

// failingStore fails every call after the first granted Reserve.
type failingStore struct {
	*MemoryStore
	fail bool
}

var errDown = errors.New("store down")

func (f *failingStore) Release(ctx context.Context, r *Request) error {
	if f.fail {
		return errDown
	}
	return f.MemoryStore.Release(ctx, r)
}

func (f *failingStore) Reserve(ctx context.Context, r *Request) (Grant, error) {
	if f.fail {
		return Grant{}, errDown
	}
	return f.MemoryStore.Reserve(ctx, r)
}

func TestStoreErrors(t *testing.T) {
	fs := &failingStore{MemoryStore: NewMemoryStore(0)}
	var reported []error
	g, err := New(Config{Store: fs, OnStoreError: func(err error) { reported = append(reported, err) }})
	require.NoError(t, err)
	p, err := g.Acquire(t.Context(), "k")
	require.NoError(t, err)
	fs.fail = true
	_, err = g.Acquire(t.Context(), "k")
	assert.ErrorIs(t, err, ErrStore)
	assert.ErrorIs(t, err, errDown)
	p.Release()
	require.Len(t, reported, 1)
	assert.ErrorIs(t, reported[0], ErrStore)
	assert.ErrorIs(t, reported[0], errDown)
}

func TestManyKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		keys := []string{"f", "e", "d", "c", "b", "a", "c"}
		p, err := g.Acquire(t.Context(), keys...)
		require.NoError(t, err)
		ks, _ := g.Snapshot()
		require.Len(t, ks, 6)
		for _, s := range ks {
			assert.Equal(t, 1, s.InFlight, s.Key)
		}
		_, d, err := g.TryAcquire("z", "y", "x", "w", "v", "a")
		require.NoError(t, err)
		assert.False(t, d.OK)
		assert.Equal(t, "a", d.Key)
		done := make(chan struct{})
		go func() {
			q, err := g.Acquire(t.Context(), "z", "y", "x", "w", "v", "a")
			assert.NoError(t, err)
			q.Release()
			close(done)
		}()
		synctest.Wait()
		p.Release()
		<-done
		ks, _ = g.Snapshot()
		require.Len(t, ks, 11)
		for _, s := range ks {
			assert.Zero(t, s.InFlight, s.Key)
			assert.Zero(t, s.Waiting, s.Key)
		}
	})
}

func TestCancelledWaiterPassesItsTurnOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGov(t, &Policy{Default: Limits{MaxConcurrency: 1}})
		p, err := g.Acquire(t.Context(), "k")
		require.NoError(t, err)
		got := make(chan int, 3)
		ctxs := make([]context.CancelFunc, 3)
		var wg sync.WaitGroup
		defer wg.Wait()
		for i := range 3 {
			ctx, cancel := context.WithCancel(t.Context())
			ctxs[i] = cancel
			wg.Go(func() {
				q, err := g.Acquire(ctx, "k")
				if err != nil {
					got <- -(i + 1)
					return
				}
				got <- i
				time.Sleep(time.Second)
				q.Release()
			})
			synctest.Wait()
		}
		ctxs[0]() // the head gives up: the next waiter becomes the head
		assert.Equal(t, -1, <-got, "the head gave up")
		p.Release()
		assert.Equal(t, 1, <-got)
		assert.Equal(t, 2, <-got)
		for _, c := range ctxs {
			c()
		}
		synctest.Wait()
		ks, _ := g.Snapshot()
		assert.Zero(t, ks[0].Waiting)
	})
}
