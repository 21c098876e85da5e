package governor

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// paths are the two ways a Governor keeps state: its own memory, and a
// Store (the reference MemoryStore).
var paths = []struct {
	name  string
	store bool
}{{"memory", false}, {"store", true}}

func newPathGov(t *testing.T, store bool, p *Policy) *Governor {
	t.Helper()
	cfg := Config{Policy: p, Rand: rand.NewPCG(1, 2)}
	if store {
		cfg.Store = NewMemoryStore(0)
	}
	g, err := New(cfg)
	require.NoError(t, err)
	return g
}

// forPaths runs test inside a synctest bubble for each path.
func forPaths(t *testing.T, test func(t *testing.T, store bool)) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { test(t, p.store) })
		})
	}
}

func quotaUsed(t *testing.T, g *Governor, key string) int {
	t.Helper()
	ks, err := g.Snapshot()
	require.NoError(t, err)
	for _, s := range ks {
		if s.Key == key {
			return s.QuotaUsed
		}
	}
	return 0
}

func take(t *testing.T, g *Governor, keys ...string) *Reservation {
	t.Helper()
	r, err := g.TakeReservation(t.Context(), keys...)
	require.NoError(t, err)
	require.True(t, r.Decision().OK)
	return r
}

func tryTake(t *testing.T, g *Governor, keys ...string) Decision {
	t.Helper()
	d, err := g.TryTake(keys...)
	require.NoError(t, err)
	return d
}

// sleepUntil moves the bubble's clock to the next hh:mm in loc.
func sleepUntil(loc *time.Location, hh, mm int) time.Time {
	now := time.Now().In(loc)
	y, m, d := now.Date()
	at := time.Date(y, m, d, hh, mm, 0, 0, loc)
	if !at.After(now) {
		at = time.Date(y, m, d+1, hh, mm, 0, 0, loc)
	}
	time.Sleep(at.Sub(now))
	return at
}

const mailbox = "mailbox:alice@example.org"

func TestReservationCancelGivesBack(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		// use takes what the limit allows, between the reservation to be
		// cancelled and the check, and may let time pass.
		use func(t *testing.T, g *Governor)
	}{
		{
			name: "calendar quota 2 per day",
			lim:  Limits{Quota: PerDay(2, time.UTC)},
			use:  func(t *testing.T, g *Governor) { take(t, g, mailbox) },
		},
		{
			name: "rolling quota 2 per hour, cancelled after Start",
			lim:  Limits{Quota: Quota{Max: 2, Window: time.Hour}},
			use: func(t *testing.T, g *Governor) {
				time.Sleep(time.Minute)
				take(t, g, mailbox)
				time.Sleep(10 * time.Minute)
			},
		},
		{
			name: "rate token",
			lim:  Limits{Rate: rate.Every(time.Minute), Burst: 1},
			use:  func(t *testing.T, g *Governor) { time.Sleep(10 * time.Second) },
		},
		{
			name: "quota and rate on several keys",
			lim:  Limits{Rate: rate.Every(time.Hour), Burst: 2, Quota: PerDay(2, time.UTC)},
			use:  func(t *testing.T, g *Governor) { take(t, g, mailbox, "tenant:x") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forPaths(t, func(t *testing.T, store bool) {
				g := newPathGov(t, store, &Policy{Default: tt.lim})
				keys := []string{mailbox}
				if tt.name == "quota and rate on several keys" {
					keys = append(keys, "tenant:x")
				}
				r := take(t, g, keys...)
				tt.use(t, g)
				d := tryTake(t, g, keys...)
				require.False(t, d.OK, "used up before the cancel")
				require.NoError(t, r.Cancel())
				d = tryTake(t, g, keys...)
				assert.True(t, d.OK, "given back: %v", d)
				d = tryTake(t, g, keys...)
				assert.False(t, d.OK, "one given back, not more: %v", d)
			})
		})
	}
}

// A calendar unit taken at 23:59 and cancelled at 00:01 does not lower the
// new day's count.
func TestReservationCancelAfterMidnight(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		ny, err := time.LoadLocation("America/New_York")
		require.NoError(t, err)
		g := newPathGov(t, store, &Policy{Default: Limits{Quota: PerDay(2, ny)}})
		sleepUntil(ny, 23, 59)
		late := take(t, g, mailbox)
		sameDay := take(t, g, mailbox)
		require.NoError(t, sameDay.Cancel(), "within the day: given back")
		assert.Equal(t, 1, quotaUsed(t, g, mailbox))

		sleepUntil(ny, 0, 1)
		take(t, g, mailbox) // the new day's first
		require.NoError(t, late.Cancel())
		assert.Equal(t, 1, quotaUsed(t, g, mailbox), "yesterday's unit is not refunded into today")
		assert.True(t, tryTake(t, g, mailbox).OK)
		d := tryTake(t, g, mailbox)
		assert.False(t, d.OK, "two taken today")
		assert.Equal(t, LimitQuota, d.Limit)
	})
}

// CancelAt takes the time explicitly: at the period's end nothing comes back.
func TestReservationCancelAtPeriodEnd(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		g := newPathGov(t, store, &Policy{Default: Limits{Quota: PerDay(1, time.UTC)}})
		r := take(t, g, mailbox)
		_, end := PerDay(1, time.UTC).Period(time.Now())
		require.NoError(t, r.CancelAt(end))
		time.Sleep(time.Until(end))
		assert.True(t, tryTake(t, g, mailbox).OK)
		assert.False(t, tryTake(t, g, mailbox).OK, "the new day has one unit, not two")
	})
}

// A Take whose context ends while it waits for a token reserved ahead gives
// back its calendar unit only into the day it was counted in (engine.undo).
func TestCancelledTakeAcrossMidnightKeepsNewDayCount(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		ny, err := time.LoadLocation("America/New_York")
		require.NoError(t, err)
		g := newPathGov(t, store, &Policy{Default: Limits{Rate: rate.Every(time.Minute), Burst: 1, Quota: PerDay(5, ny)}})
		sleepUntil(ny, 23, 59)
		time.Sleep(30 * time.Second)
		take(t, g, mailbox) // 23:59:30, the burst
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { _, err := g.Take(ctx, mailbox); done <- err }() // counted on the old day, token at 00:00:30
		synctest.Wait()
		time.Sleep(40 * time.Second) // 00:00:10
		next := make(chan error, 1)
		go func() { _, err := g.Take(t.Context(), mailbox); next <- err }() // counted on the new day, token at 00:01:30
		synctest.Wait()
		time.Sleep(5 * time.Second)
		cancel()
		var werr *WaitError
		require.ErrorAs(t, <-done, &werr)
		assert.Equal(t, 1, quotaUsed(t, g, mailbox), "the new day's unit stays counted")
		require.NoError(t, <-next)
	})
}

// A Cancel wakes a Take blocked on the quota at once.
func TestReservationCancelWakesWaiter(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		g := newPathGov(t, store, &Policy{Default: Limits{Quota: PerDay(1, time.UTC)}})
		r := take(t, g, mailbox)
		start := time.Now()
		done := make(chan error, 1)
		go func() { _, err := g.Take(t.Context(), mailbox); done <- err }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Take did not block: %v", err)
		default:
		}
		require.NoError(t, r.Cancel())
		require.NoError(t, <-done)
		assert.Zero(t, time.Since(start), "woken at once, not at the day's end")
	})
}

// Concurrent Cancels (and CancelAts) give back once.
func TestReservationConcurrentCancel(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		g := newPathGov(t, store, &Policy{Default: Limits{Quota: PerDay(3, time.UTC), Rate: rate.Every(time.Hour), Burst: 3}})
		rs := []*Reservation{take(t, g, mailbox), take(t, g, mailbox), take(t, g, mailbox)}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				r := rs[i%2]
				if i%4 < 2 {
					assert.NoError(t, r.Cancel())
				} else {
					assert.NoError(t, r.CancelAt(time.Now()))
				}
				_ = r.Decision()
			})
		}
		wg.Wait()
		assert.Equal(t, 1, quotaUsed(t, g, mailbox))
		assert.True(t, tryTake(t, g, mailbox).OK)
		assert.True(t, tryTake(t, g, mailbox).OK)
		assert.False(t, tryTake(t, g, mailbox).OK, "two given back, not sixteen")
	})
}

// A Reservation that holds nothing cancels nothing.
func TestReservationCancelHoldsNothing(t *testing.T) {
	forPaths(t, func(t *testing.T, store bool) {
		g := newPathGov(t, store, &Policy{Default: Limits{Quota: PerDay(1, time.UTC)}})
		var nilRes *Reservation
		require.NoError(t, nilRes.Cancel())
		require.NoError(t, nilRes.CancelAt(time.Now()))
		assert.Equal(t, Decision{}, nilRes.Decision())

		r, err := g.TakeReservation(t.Context(), "")
		require.ErrorIs(t, err, ErrInvalidKey)
		require.NoError(t, r.Cancel())

		r, err = g.TakeReservation(t.Context())
		require.NoError(t, err)
		assert.True(t, r.Decision().OK, "no keys: nothing to take")
		require.NoError(t, r.Cancel())

		held := take(t, g, mailbox)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		r, err = g.TakeReservation(ctx, mailbox)
		var werr *WaitError
		require.ErrorAs(t, err, &werr, "the day ends after the deadline")
		require.NotNil(t, r)
		assert.False(t, r.Decision().OK)
		assert.Equal(t, LimitQuota, r.Decision().Limit)
		require.NoError(t, r.Cancel(), "refused: nothing to give back")
		assert.Equal(t, 1, quotaUsed(t, g, mailbox), "the refused one gave back nothing")

		require.NoError(t, held.Cancel())
		require.NoError(t, held.Cancel(), "a second Cancel is a no-op")
		assert.Equal(t, 0, quotaUsed(t, g, mailbox))
		take(t, g, mailbox)
		require.NoError(t, held.Cancel())
		assert.Equal(t, 1, quotaUsed(t, g, mailbox), "still a no-op after a new Take")
	})
}

// Cancel after SetPolicy changed the keys' limits neither panics nor
// corrupts the state: the new limits keep working.
func TestReservationCancelAfterSetPolicy(t *testing.T) {
	tests := []struct {
		name     string
		old, new Limits
		free     int // TryTakes granted after the cancel
	}{
		{"calendar to rolling", Limits{Quota: PerDay(2, time.UTC)}, Limits{Quota: Quota{Max: 2, Window: time.Hour}}, 2},
		// the rolling unit was never in a calendar count
		{"rolling to calendar", Limits{Quota: Quota{Max: 2, Window: time.Hour}}, Limits{Quota: PerDay(2, time.UTC)}, 2},
		{"quota removed", Limits{Quota: PerDay(1, time.UTC)}, Limits{Rate: rate.Every(time.Hour), Burst: 1}, 1},
		{"rate removed", Limits{Rate: rate.Every(time.Hour), Burst: 1}, Limits{Quota: PerDay(3, time.UTC)}, 3},
		// the count carries over a calendar change, and the unit comes back to it
		{"day to hour", Limits{Quota: PerDay(2, time.UTC)}, Limits{Quota: Quota{Max: 2, Calendar: Hour}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forPaths(t, func(t *testing.T, store bool) {
				g := newPathGov(t, store, &Policy{Default: tt.old})
				r := take(t, g, mailbox)
				take(t, g, "other")
				require.NoError(t, g.SetPolicy(&Policy{Default: tt.new}))
				time.Sleep(time.Second)
				require.NotPanics(t, func() { require.NoError(t, r.Cancel()) })
				n := 0
				for range 5 {
					if tryTake(t, g, mailbox).OK {
						n++
					}
				}
				assert.Equal(t, tt.free, n)
				assert.GreaterOrEqual(t, quotaUsed(t, g, mailbox), 0)
			})
		})
	}
}
