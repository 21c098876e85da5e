package redisstore_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
	"github.com/sluicemail/sluice/governor/storetest"
)

// One suite of Store contract cases (governor/store.go), run against the
// in-memory reference store and the Redis store with the same expectations.
// Every case passes explicit times, as the Governor does.

var t0 = time.Date(2030, 1, 2, 8, 0, 0, 0, time.UTC)

type storeKind struct {
	name string
	new  func(t *testing.T) governor.Store
}

func stores() []storeKind {
	return []storeKind{
		{"memory", func(*testing.T) governor.Store { return governor.NewMemoryStore(0) }},
		{"redis", func(t *testing.T) governor.Store { return newStore(t, needRedis(t), redisstore.Options{}) }},
	}
}

var ticketN atomic.Uint64

func req(kind governor.Kind, now time.Time, lim governor.Limits, keys ...string) *governor.Request {
	ls := make([]governor.Limits, len(keys))
	for i := range ls {
		ls[i] = lim
	}
	return &governor.Request{Kind: kind, Keys: keys, Limits: ls, Now: now, Ticket: "t-" + strconv.FormatUint(ticketN.Add(1), 10)}
}

func reserve(t *testing.T, st governor.Store, r *governor.Request) governor.Grant {
	t.Helper()
	g, err := st.Reserve(context.Background(), r)
	require.NoError(t, err)
	return g
}

func state(t *testing.T, st governor.Store, now time.Time, key string) governor.KeyState {
	t.Helper()
	ks, err := st.Snapshot(context.Background(), now)
	require.NoError(t, err)
	for _, k := range ks {
		if k.Key == key {
			return k
		}
	}
	return governor.KeyState{Key: key}
}

// woken waits for a wake-up; the bound only ends a broken test.
func woken(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	require.NotNil(t, ch)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken")
	}
}

var contractCases = []struct {
	name string
	run  func(t *testing.T, st governor.Store)
}{
	{"concurrency slots, wake on release", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 2}
		a, b := req(governor.KindSlot, t0, lim, "k"), req(governor.KindSlot, t0, lim, "k")
		require.True(t, reserve(t, st, a).OK)
		require.True(t, reserve(t, st, b).OK)
		c := req(governor.KindSlot, t0, lim, "k")
		g := reserve(t, st, c)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitConcurrency, g.Decision.Limit)
		require.Equal(t, "k", g.Decision.Key)
		require.True(t, g.Decision.RetryAt.IsZero())
		ks := state(t, st, t0, "k")
		require.Equal(t, 2, ks.InFlight)
		require.Equal(t, 1, ks.Waiting)
		require.Equal(t, 2, ks.Concurrency)
		require.NoError(t, st.Release(context.Background(), a))
		woken(t, g.Wake)
		require.True(t, reserve(t, st, c).OK)
		ks = state(t, st, t0, "k")
		require.Equal(t, 2, ks.InFlight)
		require.Equal(t, 0, ks.Waiting)
	}},
	{"release is idempotent", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 3}
		a, b := req(governor.KindSlot, t0, lim, "k"), req(governor.KindSlot, t0, lim, "k")
		require.True(t, reserve(t, st, a).OK)
		require.True(t, reserve(t, st, b).OK)
		require.NoError(t, st.Release(context.Background(), a))
		require.NoError(t, st.Release(context.Background(), a))
		require.Equal(t, 1, state(t, st, t0, "k").InFlight)
		require.NoError(t, st.Release(context.Background(), req(governor.KindSlot, t0, lim, "k")))
		require.Equal(t, 1, state(t, st, t0, "k").InFlight)
	}},
	{"FIFO: the head of the queue goes first", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 1}
		a := req(governor.KindSlot, t0, lim, "k")
		require.True(t, reserve(t, st, a).OK)
		b := req(governor.KindSlot, t0, lim, "k")
		gb := reserve(t, st, b)
		require.False(t, gb.OK)
		c := req(governor.KindSlot, t0, lim, "k")
		gc := reserve(t, st, c)
		require.False(t, gc.OK)
		require.Equal(t, governor.LimitQueue, gc.Decision.Limit)
		require.NoError(t, st.Release(context.Background(), a))
		woken(t, gb.Wake)
		gc = reserve(t, st, c) // not the head
		require.False(t, gc.OK)
		require.Equal(t, governor.LimitQueue, gc.Decision.Limit)
		require.True(t, reserve(t, st, b).OK)
		require.Equal(t, 1, state(t, st, t0, "k").Waiting)
		// c's ticket kept its place: it is the head now
		require.NoError(t, st.Release(context.Background(), b))
		woken(t, gc.Wake)
		require.True(t, reserve(t, st, c).OK)
	}},
	{"Try never queues and yields to waiters", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 1}
		a := req(governor.KindSlot, t0, lim, "k")
		require.True(t, reserve(t, st, a).OK)
		tr := req(governor.KindSlot, t0, lim, "k")
		tr.Try = true
		g := reserve(t, st, tr)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitConcurrency, g.Decision.Limit)
		require.Equal(t, 0, state(t, st, t0, "k").Waiting)
		b := req(governor.KindSlot, t0, lim, "k")
		require.False(t, reserve(t, st, b).OK)
		require.NoError(t, st.Release(context.Background(), a))
		tr2 := req(governor.KindSlot, t0, lim, "k")
		tr2.Try = true
		g = reserve(t, st, tr2)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitQueue, g.Decision.Limit)
		require.True(t, reserve(t, st, b).OK)
	}},
	{"cancel a waiter leaves the queue and wakes the next", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 1}
		a := req(governor.KindSlot, t0, lim, "k")
		require.True(t, reserve(t, st, a).OK)
		b, c := req(governor.KindSlot, t0, lim, "k"), req(governor.KindSlot, t0, lim, "k")
		gb, gc := reserve(t, st, b), reserve(t, st, c)
		require.False(t, gb.OK)
		require.False(t, gc.OK)
		require.NoError(t, st.Cancel(context.Background(), b, gb))
		woken(t, gc.Wake)
		require.Equal(t, 1, state(t, st, t0, "k").Waiting)
		require.NoError(t, st.Release(context.Background(), a))
		require.True(t, reserve(t, st, c).OK)
		require.NoError(t, st.Cancel(context.Background(), req(governor.KindSlot, t0, lim, "k"), governor.Grant{}))
	}},
	{"cancel a granted slot frees it", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 1}
		a := req(governor.KindSlot, t0, lim, "k")
		g := reserve(t, st, a)
		require.True(t, g.OK)
		require.NoError(t, st.Cancel(context.Background(), a, g))
		require.Equal(t, 0, state(t, st, t0, "k").InFlight)
		require.NoError(t, st.Release(context.Background(), a)) // no double free
		require.True(t, reserve(t, st, req(governor.KindSlot, t0, lim, "k")).OK)
		require.Equal(t, 1, state(t, st, t0, "k").InFlight)
	}},
	{"all or nothing over several keys", func(t *testing.T, st governor.Store) {
		one := governor.Limits{MaxConcurrency: 1}
		require.True(t, reserve(t, st, req(governor.KindSlot, t0, one, "a")).OK)
		r := req(governor.KindSlot, t0, one, "a", "b", "c")
		r.Try = true
		g := reserve(t, st, r)
		require.False(t, g.OK)
		require.Equal(t, "a", g.Decision.Key)
		require.Equal(t, 0, state(t, st, t0, "b").InFlight)
		require.Equal(t, 0, state(t, st, t0, "c").InFlight)
		r2 := req(governor.KindSlot, t0, one, "b", "c")
		require.True(t, reserve(t, st, r2).OK)
		require.Equal(t, 1, state(t, st, t0, "b").InFlight)
		require.NoError(t, st.Release(context.Background(), r2))
		require.Equal(t, 0, state(t, st, t0, "c").InFlight)
	}},
	{"rate 1/min burst 1: 0, 1m, 2m, tokens ahead", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{Rate: rate.Every(time.Minute), Burst: 1}
		g := reserve(t, st, req(governor.KindEvent, t0, lim, "k"))
		require.True(t, g.OK)
		require.True(t, g.Start.Equal(t0))
		g = reserve(t, st, req(governor.KindEvent, t0, lim, "k"))
		require.True(t, g.OK)
		require.True(t, g.Start.Equal(t0.Add(time.Minute)), g.Start)
		require.Equal(t, governor.LimitRate, g.Decision.Limit)
		tr := req(governor.KindEvent, t0, lim, "k")
		tr.Try = true
		g = reserve(t, st, tr)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitRate, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(2*time.Minute)), g.Decision.RetryAt)
		d := req(governor.KindEvent, t0, lim, "k")
		d.Deadline = t0.Add(90 * time.Second)
		g = reserve(t, st, d)
		require.False(t, g.OK)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(2*time.Minute)))
		require.NoError(t, st.Cancel(context.Background(), d, g))
		g = reserve(t, st, req(governor.KindEvent, t0.Add(2*time.Minute), lim, "k"))
		require.True(t, g.OK)
		require.True(t, g.Start.Equal(t0.Add(2*time.Minute)))
	}},
	{"sub-second rate with burst, exact to the nanosecond", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{Rate: 3, Burst: 2}
		iv := time.Duration(333333333) // int64(1e9 / 3), as the engine computes it
		want := []time.Duration{0, 0, iv, 2 * iv, 3 * iv}
		now := t0.Add(123456789)
		for i, w := range want {
			g := reserve(t, st, req(governor.KindEvent, now, lim, "k"))
			require.True(t, g.OK)
			require.Equal(t, w, g.Start.Sub(now), "event %d", i)
		}
		ks := state(t, st, now, "k")
		require.InDelta(t, 3.0, float64(ks.Rate), 1e-6)
		require.InDelta(t, -3.0, ks.Tokens, 1e-6) // burst 2, five taken
	}},
	{"cancel gives the token back", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{Rate: rate.Every(time.Minute)}
		require.True(t, reserve(t, st, req(governor.KindEvent, t0, lim, "k")).OK)
		r := req(governor.KindEvent, t0, lim, "k")
		g := reserve(t, st, r)
		require.True(t, g.Start.Equal(t0.Add(time.Minute)))
		now := t0.Add(time.Second)
		r.Now = now
		require.NoError(t, st.Cancel(context.Background(), r, g))
		g = reserve(t, st, req(governor.KindEvent, now, lim, "k"))
		require.True(t, g.Start.Equal(t0.Add(time.Minute)), g.Start)
	}},
	{"connection rate on slots", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{ConnectionRate: 2, ConnectionBurst: 1}
		g := reserve(t, st, req(governor.KindSlot, t0, lim, "k"))
		require.True(t, g.OK)
		tr := req(governor.KindSlot, t0, lim, "k")
		tr.Try = true
		g = reserve(t, st, tr)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitConnectionRate, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(500*time.Millisecond)))
	}},
	{"quota per day in a time zone", func(t *testing.T, st governor.Store) {
		paris, err := time.LoadLocation("Europe/Paris")
		if err != nil {
			t.Skip("no tzdata:", err)
		}
		lim := governor.Limits{Quota: governor.PerDay(2, paris)}
		now := time.Date(2030, 1, 2, 22, 0, 0, 0, time.UTC) // 23:00 in Paris
		require.True(t, reserve(t, st, req(governor.KindEvent, now, lim, "m")).OK)
		r := req(governor.KindEvent, now.Add(time.Minute), lim, "m")
		g := reserve(t, st, r)
		require.True(t, g.OK)
		r3 := req(governor.KindEvent, now.Add(2*time.Minute), lim, "m")
		r3.Try = true
		g = reserve(t, st, r3)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitQuota, g.Decision.Limit)
		midnight := time.Date(2030, 1, 3, 0, 0, 0, 0, paris)
		require.True(t, g.Decision.RetryAt.Equal(midnight), g.Decision.RetryAt)
		ks := state(t, st, now.Add(2*time.Minute), "m")
		require.Equal(t, 2, ks.QuotaUsed)
		require.True(t, ks.QuotaResets.Equal(midnight))
		// a cancelled event gives its unit back
		r.Now = now.Add(3 * time.Minute)
		require.NoError(t, st.Cancel(context.Background(), r, governor.Grant{OK: true, Start: now.Add(time.Minute)}))
		require.Equal(t, 1, state(t, st, r.Now, "m").QuotaUsed)
		require.True(t, reserve(t, st, req(governor.KindEvent, r.Now, lim, "m")).OK)
		g = reserve(t, st, req(governor.KindEvent, midnight, lim, "m"))
		require.True(t, g.OK)
		require.Equal(t, 1, state(t, st, midnight, "m").QuotaUsed)
	}},
	{"rolling quota", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{Quota: governor.Quota{Max: 2, Window: time.Hour}}
		require.True(t, reserve(t, st, req(governor.KindEvent, t0, lim, "m")).OK)
		require.True(t, reserve(t, st, req(governor.KindEvent, t0.Add(10*time.Minute), lim, "m")).OK)
		r := req(governor.KindEvent, t0.Add(20*time.Minute), lim, "m")
		r.Try = true
		g := reserve(t, st, r)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitQuota, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(time.Hour)), g.Decision.RetryAt)
		require.True(t, reserve(t, st, req(governor.KindEvent, t0.Add(time.Hour), lim, "m")).OK)
		ks := state(t, st, t0.Add(time.Hour), "m")
		require.Equal(t, 2, ks.QuotaUsed)
		require.True(t, ks.QuotaResets.Equal(t0.Add(70*time.Minute)))
	}},
	{"send window opens at 09:00", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{Window: governor.Window{Start: 9 * time.Hour, End: 17 * time.Hour}}
		g := reserve(t, st, req(governor.KindEvent, t0, lim, "k")) // 08:00
		require.False(t, g.OK)
		require.Equal(t, governor.LimitWindow, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(time.Hour)))
		require.True(t, reserve(t, st, req(governor.KindSlot, t0.Add(time.Hour), lim, "j")).OK)
	}},
	{"suspend and resume", func(t *testing.T, st governor.Store) {
		lim := governor.Limits{MaxConcurrency: 5}
		ctx := context.Background()
		require.NoError(t, st.Suspend(ctx, t0, "k", t0.Add(5*time.Minute), "421 too many"))
		r := req(governor.KindSlot, t0, lim, "k")
		g := reserve(t, st, r)
		require.False(t, g.OK)
		require.Equal(t, governor.LimitSuspended, g.Decision.Limit)
		require.Equal(t, "421 too many", g.Decision.Reason)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(5*time.Minute)))
		ks := state(t, st, t0, "k")
		require.True(t, ks.SuspendedUntil.Equal(t0.Add(5*time.Minute)))
		require.Equal(t, "421 too many", ks.LastReason)
		require.NoError(t, st.Resume(ctx, t0, "k"))
		woken(t, g.Wake)
		require.True(t, reserve(t, st, r).OK)
		require.ErrorIs(t, st.Suspend(ctx, t0, "", t0, ""), governor.ErrInvalidKey)
	}},
	{"decision: latest known RetryAt, unknown preferred", func(t *testing.T, st governor.Store) {
		ctx := context.Background()
		w := governor.Limits{Window: governor.Window{Start: 10 * time.Hour, End: 17 * time.Hour}}
		require.NoError(t, st.Suspend(ctx, t0, "a", t0.Add(5*time.Minute), "x"))
		r := &governor.Request{Kind: governor.KindEvent, Keys: []string{"a", "b"}, Limits: []governor.Limits{{}, w}, Now: t0, Try: true, Ticket: "dec-1"}
		g := reserve(t, st, r)
		require.False(t, g.OK)
		require.Equal(t, "b", g.Decision.Key)
		require.Equal(t, governor.LimitWindow, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.Equal(t0.Add(2*time.Hour)))
		one := governor.Limits{MaxConcurrency: 1}
		require.True(t, reserve(t, st, req(governor.KindSlot, t0, one, "c")).OK)
		r = &governor.Request{Kind: governor.KindSlot, Keys: []string{"a", "c"}, Limits: []governor.Limits{{}, one}, Now: t0, Try: true, Ticket: "dec-2"}
		g = reserve(t, st, r)
		require.False(t, g.OK)
		require.Equal(t, "c", g.Decision.Key)
		require.Equal(t, governor.LimitConcurrency, g.Decision.Limit)
		require.True(t, g.Decision.RetryAt.IsZero())
	}},
	{"congestion halves concurrency once per run, success grows it", func(t *testing.T, st governor.Store) {
		ctx := context.Background()
		lim := governor.Limits{MaxConcurrency: 4}
		var held []*governor.Request
		for range 3 {
			r := req(governor.KindSlot, t0, lim, "k")
			require.True(t, reserve(t, st, r).OK)
			held = append(held, r)
		}
		now := t0.Add(time.Second)
		require.NoError(t, st.Feedback(ctx, now, "k", lim, governor.Signal{Kind: governor.Congestion, Started: t0, Reason: "421 4.4.5"}))
		require.NoError(t, st.Feedback(ctx, now, "k", lim, governor.Signal{Kind: governor.Congestion, Started: t0}))
		ks := state(t, st, now, "k")
		require.Equal(t, 2, ks.Concurrency)
		require.Equal(t, "421 4.4.5", ks.LastReason)
		for _, r := range held {
			require.NoError(t, st.Release(ctx, r))
		}
		// capped at the 2 holders the receiver accepted until ProbeAfter
		for range 10 {
			require.NoError(t, st.Feedback(ctx, now, "k", lim, governor.Signal{Kind: governor.Success}))
		}
		require.Equal(t, 2, state(t, st, now, "k").Concurrency)
		later := now.Add(governor.DefaultProbeAfter + time.Second)
		for range 10 {
			require.NoError(t, st.Feedback(ctx, later, "k", lim, governor.Signal{Kind: governor.Success}))
		}
		require.Equal(t, 4, state(t, st, later, "k").Concurrency)
	}},
	{"rate-limited lowers the rate for a while", func(t *testing.T, st governor.Store) {
		ctx := context.Background()
		lim := governor.Limits{Rate: 10}
		require.NoError(t, st.Feedback(ctx, t0, "k", lim, governor.Signal{Kind: governor.RateLimited, Started: t0}))
		require.InDelta(t, 5.0, float64(state(t, st, t0, "k").Rate), 1e-9)
		require.InDelta(t, 10.0, float64(state(t, st, t0.Add(governor.DefaultRateFor), "k").Rate), 1e-9)
		// a key without a rate pauses instead
		require.NoError(t, st.Feedback(ctx, t0, "p", governor.Limits{}, governor.Signal{Kind: governor.RateLimited, Reason: "4.7.28"}))
		ks := state(t, st, t0, "p")
		require.True(t, ks.SuspendedUntil.Equal(t0.Add(governor.DefaultRatePause)))
	}},
	{"a failed cohort suspends", func(t *testing.T, st governor.Store) {
		ctx := context.Background()
		lim := governor.Limits{MaxConcurrency: 2}
		require.NoError(t, st.Feedback(ctx, t0, "k", lim, governor.Signal{Kind: governor.Failure}))
		require.True(t, state(t, st, t0, "k").SuspendedUntil.IsZero())
		require.NoError(t, st.Feedback(ctx, t0, "k", lim, governor.Signal{Kind: governor.Failure, Reason: "timeout"}))
		ks := state(t, st, t0, "k")
		require.True(t, ks.SuspendedUntil.Equal(t0.Add(governor.DefaultSuspendFor)))
		r := req(governor.KindSlot, t0, lim, "k")
		r.Try = true
		g := reserve(t, st, r)
		require.Equal(t, "failed cohort of 2: timeout", g.Decision.Reason)
	}},
	{"invalid requests are errors", func(t *testing.T, st governor.Store) {
		_, err := st.Reserve(context.Background(), &governor.Request{Kind: governor.KindSlot, Keys: []string{"b", "a"}, Limits: make([]governor.Limits, 2), Now: t0, Ticket: "x"})
		require.Error(t, err)
		_, err = st.Reserve(context.Background(), &governor.Request{Kind: governor.KindSlot, Keys: []string{"a"}, Now: t0, Ticket: "x"})
		require.Error(t, err)
		require.ErrorIs(t, st.Feedback(context.Background(), t0, "", governor.Limits{}, governor.Signal{Kind: governor.Success}), governor.ErrInvalidKey)
	}},
}

func TestStoreContract(t *testing.T) {
	for _, sk := range stores() {
		t.Run(sk.name, func(t *testing.T) {
			if sk.name == "redis" {
				needRedis(t)
			}
			for _, c := range contractCases {
				t.Run(c.name, func(t *testing.T) { c.run(t, sk.new(t)) })
			}
		})
	}
}

// The governor's own conformance suite, against the Redis store.
func TestStoretestConformance(t *testing.T) {
	addr := needRedis(t)
	storetest.Run(t, func(t *testing.T) governor.Store { return newStore(t, addr, redisstore.Options{}) })
}
