// Package storetest checks a governor.Store against the contract written on
// the governor.Store interface. A store's own tests call Run:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) governor.Store { return newTestStore(t) })
//	}
//
// Every check drives the store with explicit times (Request.Now and the now
// arguments), far from the wall clock, so no test sleeps and a store must
// honour the given times. newStore must return an empty store each time;
// keys are also prefixed per subtest so that a shared server does not mix
// them. The checks are sequential and use a fresh ticket for every request.
package storetest

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/sluicemail/sluice/governor"
)

// T0 is the time the checks start at: a Friday, 10:00 UTC.
var T0 = time.Date(2031, 3, 7, 10, 0, 0, 0, time.UTC)

var tickets atomic.Uint64

// harness issues requests against one store under a key prefix.
type harness struct {
	t      *testing.T
	s      governor.Store
	prefix string
	ctx    context.Context
}

func (h *harness) key(k string) string { return h.prefix + k }

// req builds a request over keys (sorted by the harness) with one Limits for all.
func (h *harness) req(kind governor.Kind, now time.Time, lim governor.Limits, keys ...string) *governor.Request {
	r := &governor.Request{Kind: kind, Now: now, Ticket: "storetest-" + strconv.FormatUint(tickets.Add(1), 10)}
	for _, k := range keys {
		r.Keys = append(r.Keys, h.key(k))
	}
	sortStrings(r.Keys)
	for range r.Keys {
		r.Limits = append(r.Limits, lim)
	}
	return r
}

func (h *harness) reserve(r *governor.Request) governor.Grant {
	h.t.Helper()
	g, err := h.s.Reserve(h.ctx, r)
	require.NoError(h.t, err)
	return g
}

func (h *harness) state(now time.Time, key string) governor.KeyState {
	h.t.Helper()
	ks, err := h.s.Snapshot(h.ctx, now)
	require.NoError(h.t, err)
	for _, s := range ks {
		if s.Key == h.key(key) {
			return s
		}
	}
	h.t.Fatalf("key %q not in the snapshot", h.key(key))
	return governor.KeyState{}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Run runs every check against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) governor.Store) {
	checks := []struct {
		name string
		fn   func(h *harness)
	}{
		{"SlotsAllOrNothing", slotsAllOrNothing},
		{"ReleaseIdempotent", releaseIdempotent},
		{"RateReservesAheadAndDeadline", rateReservesAhead},
		{"CancelGivesBack", cancelGivesBack},
		{"CancelAfterStartRollingUnit", cancelAfterStartRolling},
		{"CancelAfterCalendarPeriodEnded", cancelAfterPeriodEnded},
		{"CancelTokenNotBeforeNow", cancelTokenNotBeforeNow},
		{"CancelTwiceIsNoOp", cancelTwice},
		{"ConnectionRateOnSlots", connectionRate},
		{"CalendarQuotaInTimeZone", calendarQuota},
		{"RollingQuota", rollingQuota},
		{"SendWindow", sendWindow},
		{"SuspendResume", suspendResume},
		{"FIFOQueue", fifoQueue},
		{"WakeOnRelease", wakeOnRelease},
		{"FeedbackCongestionAndSuccess", feedbackAIMD},
		{"FeedbackRateLimited", feedbackRateLimited},
		{"FeedbackFailureCohort", feedbackCohort},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			h := &harness{t: t, s: newStore(t), prefix: "st:" + c.name + ":", ctx: context.Background()}
			c.fn(h)
		})
	}
}

func slotsAllOrNothing(h *harness) {
	t := h.t
	one := governor.Limits{MaxConcurrency: 1}
	g := h.reserve(h.req(governor.KindSlot, T0, one, "a"))
	require.True(t, g.OK)
	assert.True(t, T0.Equal(g.Start))
	r := h.req(governor.KindSlot, T0, one, "a", "b")
	r.Try = true
	g = h.reserve(r)
	require.False(t, g.OK)
	assert.Equal(t, h.key("a"), g.Decision.Key)
	assert.Equal(t, governor.LimitConcurrency, g.Decision.Limit)
	assert.True(t, g.Decision.RetryAt.IsZero(), "a slot's return time is unknown")
	// Nothing was taken on b.
	g = h.reserve(h.req(governor.KindSlot, T0, one, "b"))
	assert.True(t, g.OK, "b must be free: all or nothing")
	assert.Equal(t, 1, h.state(T0, "a").InFlight)
	assert.Equal(t, 1, h.state(T0, "b").InFlight)
}

func releaseIdempotent(h *harness) {
	t := h.t
	one := governor.Limits{MaxConcurrency: 1}
	r := h.req(governor.KindSlot, T0, one, "a", "b")
	require.True(t, h.reserve(r).OK)
	r.Now = T0.Add(time.Second)
	require.NoError(t, h.s.Release(h.ctx, r))
	require.NoError(t, h.s.Release(h.ctx, r), "second release is a no-op")
	r2 := h.req(governor.KindSlot, T0.Add(2*time.Second), one, "a")
	require.True(t, h.reserve(r2).OK)
	require.NoError(t, h.s.Release(h.ctx, r), "a stale ticket releases nothing")
	assert.Equal(t, 1, h.state(T0.Add(2*time.Second), "a").InFlight)
	assert.Equal(t, 0, h.state(T0.Add(2*time.Second), "b").InFlight)
}

func rateReservesAhead(h *harness) {
	t := h.t
	lim := governor.Limits{Rate: rate.Every(time.Minute), Burst: 1}
	g := h.reserve(h.req(governor.KindEvent, T0, lim, "m"))
	require.True(t, g.OK)
	assert.True(t, T0.Equal(g.Start))
	g = h.reserve(h.req(governor.KindEvent, T0, lim, "m"))
	require.True(t, g.OK)
	assert.True(t, T0.Add(time.Minute).Equal(g.Start), "token taken ahead: start %v", g.Start)
	r := h.req(governor.KindEvent, T0, lim, "m")
	r.Deadline = T0.Add(90 * time.Second)
	g = h.reserve(r)
	require.False(t, g.OK, "the token comes after the deadline")
	assert.Equal(t, governor.LimitRate, g.Decision.Limit)
	assert.True(t, T0.Add(2*time.Minute).Equal(g.Decision.RetryAt))
	r = h.req(governor.KindEvent, T0, lim, "m")
	r.Try = true
	g = h.reserve(r)
	require.False(t, g.OK)
	assert.True(t, T0.Add(2*time.Minute).Equal(g.Decision.RetryAt), "refusals took nothing")
	// Sub-second precision: 10 per second.
	fast := governor.Limits{Rate: 10, Burst: 1}
	require.True(t, h.reserve(h.req(governor.KindEvent, T0, fast, "f")).OK)
	g = h.reserve(h.req(governor.KindEvent, T0, fast, "f"))
	assert.True(t, T0.Add(100*time.Millisecond).Equal(g.Start), "start %v", g.Start)
	// Rate 0 is unlimited.
	for range 100 {
		require.True(t, h.reserve(h.req(governor.KindEvent, T0, governor.Limits{}, "free")).OK)
	}
}

func cancelGivesBack(h *harness) {
	t := h.t
	lim := governor.Limits{Rate: rate.Every(time.Minute), Burst: 1, MaxConcurrency: 1, Quota: governor.Quota{Max: 2, Window: time.Hour}}
	require.True(t, h.reserve(h.req(governor.KindEvent, T0, lim, "m")).OK)
	r := h.req(governor.KindEvent, T0, lim, "m")
	g := h.reserve(r)
	require.True(t, g.OK)
	r.Now = T0.Add(10 * time.Second)
	require.NoError(t, h.s.Cancel(h.ctx, r, g))
	g = h.reserve(h.req(governor.KindEvent, T0.Add(10*time.Second), lim, "m"))
	require.True(t, g.OK)
	assert.True(t, T0.Add(time.Minute).Equal(g.Start), "the cancelled token came back: %v", g.Start)
	assert.Equal(t, 2, h.state(T0.Add(10*time.Second), "m").QuotaUsed, "the cancelled quota unit came back")

	rs := h.req(governor.KindSlot, T0, lim, "s")
	gs := h.reserve(rs)
	require.True(t, gs.OK)
	rs.Now = T0.Add(time.Second)
	require.NoError(t, h.s.Cancel(h.ctx, rs, gs))
	assert.Equal(t, 0, h.state(T0.Add(time.Second), "s").InFlight)
	require.NoError(t, h.s.Release(h.ctx, rs), "release after cancel frees nothing more")
	require.NoError(t, h.s.Cancel(h.ctx, h.req(governor.KindSlot, T0, lim, "s"), governor.Grant{}), "unknown ticket")
	assert.Equal(t, 0, h.state(T0.Add(time.Second), "s").InFlight)
}

// cancel cancels the granted r at now.
func (h *harness) cancel(r *governor.Request, g governor.Grant, now time.Time) {
	h.t.Helper()
	r.Now = now
	require.NoError(h.t, h.s.Cancel(h.ctx, r, g))
}

// try reports whether a Try request over key would be granted at now (and
// takes it if so), with the refusal's Decision.
func (h *harness) try(now time.Time, lim governor.Limits, key string) governor.Grant {
	h.t.Helper()
	r := h.req(governor.KindEvent, now, lim, key)
	r.Try = true
	return h.reserve(r)
}

// An event granted, started and then not sent gives its rolling-quota unit
// back: the one stamped at its Start, and none once that one left the window.
func cancelAfterStartRolling(h *harness) {
	t := h.t
	lim := governor.Limits{Quota: governor.Quota{Max: 2, Window: time.Hour}}
	r1 := h.req(governor.KindEvent, T0, lim, "r")
	g1 := h.reserve(r1)
	require.True(t, g1.OK)
	r2 := h.req(governor.KindEvent, T0.Add(time.Minute), lim, "r")
	g2 := h.reserve(r2)
	require.True(t, g2.OK)
	require.False(t, h.try(T0.Add(5*time.Minute), lim, "r").OK, "quota used up")
	h.cancel(r1, g1, T0.Add(10*time.Minute)) // after its Start
	assert.Equal(t, 1, h.state(T0.Add(10*time.Minute), "r").QuotaUsed, "the unit came back")
	g := h.try(T0.Add(10*time.Minute), lim, "r")
	require.True(t, g.OK, "the unit given back is usable")
	// g2's unit (stamped T0+1m) left the window at T0+61m: cancelling it
	// then must not remove the unit stamped at T0+10m.
	h.cancel(r2, g2, T0.Add(65*time.Minute))
	assert.Equal(t, 1, h.state(T0.Add(65*time.Minute), "r").QuotaUsed, "an expired unit gives nothing back")
	g = h.try(T0.Add(65*time.Minute), lim, "r")
	require.True(t, g.OK)
	g = h.try(T0.Add(65*time.Minute), lim, "r")
	require.False(t, g.OK, "two in the window")
	assert.True(t, T0.Add(70*time.Minute).Equal(g.Decision.RetryAt), "retry at %v", g.Decision.RetryAt)
}

// A calendar-quota unit comes back only into the period it was counted in:
// a unit of yesterday cancelled after midnight does not lower today's count.
func cancelAfterPeriodEnded(h *harness) {
	t := h.t
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	lim := governor.Limits{Quota: governor.PerDay(2, tokyo)}
	late := time.Date(2031, 3, 7, 23, 58, 0, 0, tokyo)
	midnight := time.Date(2031, 3, 8, 0, 0, 0, 0, tokyo)
	r1 := h.req(governor.KindEvent, late, lim, "mb")
	g1 := h.reserve(r1)
	require.True(t, g1.OK)
	r2 := h.req(governor.KindEvent, late.Add(time.Minute), lim, "mb")
	g2 := h.reserve(r2)
	require.True(t, g2.OK)
	// Within the period, a cancel gives the unit back.
	h.cancel(r2, g2, late.Add(90*time.Second))
	assert.Equal(t, 1, h.state(late.Add(90*time.Second), "mb").QuotaUsed)
	// After midnight: one taken on the new day, then yesterday's cancelled.
	require.True(t, h.reserve(h.req(governor.KindEvent, midnight.Add(time.Minute), lim, "mb")).OK)
	h.cancel(r1, g1, midnight.Add(2*time.Minute))
	st := h.state(midnight.Add(2*time.Minute), "mb")
	assert.Equal(t, 1, st.QuotaUsed, "yesterday's unit is not refunded into today")
	require.True(t, h.try(midnight.Add(2*time.Minute), lim, "mb").OK)
	g := h.try(midnight.Add(2*time.Minute), lim, "mb")
	require.False(t, g.OK, "two used today")
	assert.Equal(t, governor.LimitQuota, g.Decision.Limit)
	// Cancelled after midnight before anything was taken on the new day:
	// nothing comes back either.
	lim2 := governor.Limits{Quota: governor.PerDay(1, tokyo)}
	r3 := h.req(governor.KindEvent, late, lim2, "mb2")
	g3 := h.reserve(r3)
	require.True(t, g3.OK)
	h.cancel(r3, g3, midnight.Add(time.Minute))
	require.True(t, h.reserve(h.req(governor.KindEvent, midnight.Add(2*time.Minute), lim2, "mb2")).OK)
	assert.False(t, h.try(midnight.Add(2*time.Minute), lim2, "mb2").OK, "one per day")
}

// A cancel returns the event's rate token: the bucket's theoretical arrival
// time moves back one interval, but never before now (no credit beyond the
// burst).
func cancelTokenNotBeforeNow(h *harness) {
	t := h.t
	lim := governor.Limits{Rate: rate.Every(time.Minute), Burst: 2}
	r1 := h.req(governor.KindEvent, T0, lim, "k")
	g1 := h.reserve(r1)
	require.True(t, g1.OK)
	r2 := h.req(governor.KindEvent, T0, lim, "k")
	g2 := h.reserve(r2)
	require.True(t, g2.OK)
	assert.True(t, T0.Equal(g2.Start), "the burst: start %v", g2.Start)
	at := T0.Add(30 * time.Second)
	require.False(t, h.try(at, lim, "k").OK, "no token before T0+1m")
	h.cancel(r1, g1, at) // after its Start
	assert.InDelta(t, 1.5, h.state(at, "k").Tokens, 1e-6, "one token back, half of one refilled")
	r3 := h.req(governor.KindEvent, at, lim, "k")
	g3 := h.reserve(r3)
	require.True(t, g3.OK)
	assert.True(t, at.Equal(g3.Start), "the token given back is usable now: start %v", g3.Start)
	g := h.try(at, lim, "k")
	require.False(t, g.OK)
	assert.True(t, T0.Add(time.Minute).Equal(g.Decision.RetryAt), "retry at %v", g.Decision.RetryAt)
	// At T0+90s the bucket holds 1.5 tokens: two cancels fill it, no more.
	later := T0.Add(90 * time.Second)
	h.cancel(r2, g2, later)
	h.cancel(r3, g3, later)
	assert.InDelta(t, 2, h.state(later, "k").Tokens, 1e-6, "full, never more than the burst")
	require.True(t, h.try(later, lim, "k").OK)
	require.True(t, h.try(later, lim, "k").OK)
	g = h.try(later, lim, "k")
	require.False(t, g.OK, "no credit beyond the burst")
	assert.True(t, later.Add(time.Minute).Equal(g.Decision.RetryAt), "retry at %v", g.Decision.RetryAt)
}

// A second cancel of a granted event gives back nothing more.
func cancelTwice(h *harness) {
	t := h.t
	lim := governor.Limits{Rate: rate.Every(time.Minute), Burst: 3, Quota: governor.Quota{Max: 3, Window: time.Hour}}
	cal := governor.Limits{Quota: governor.PerDay(3, time.UTC)}
	for _, c := range []struct {
		key string
		lim governor.Limits
	}{{"rolling", lim}, {"calendar", cal}} {
		var rs []*governor.Request
		var gs []governor.Grant
		for range 3 {
			r := h.req(governor.KindEvent, T0, c.lim, c.key)
			g := h.reserve(r)
			require.True(t, g.OK, c.key)
			rs, gs = append(rs, r), append(gs, g)
		}
		h.cancel(rs[0], gs[0], T0.Add(time.Second))
		h.cancel(rs[0], gs[0], T0.Add(2*time.Second))
		h.cancel(rs[0], gs[0], T0.Add(3*time.Second))
		assert.Equal(t, 2, h.state(T0.Add(3*time.Second), c.key).QuotaUsed, "%s: one unit back", c.key)
		require.True(t, h.try(T0.Add(3*time.Second), c.lim, c.key).OK, c.key)
		g := h.try(T0.Add(3*time.Second), c.lim, c.key)
		assert.False(t, g.OK, "%s: one event given back, not three", c.key)
	}
}

func connectionRate(h *harness) {
	t := h.t
	lim := governor.Limits{MaxConcurrency: 10, ConnectionRate: rate.Every(time.Second), ConnectionBurst: 2}
	for range 2 {
		require.True(t, h.reserve(h.req(governor.KindSlot, T0, lim, "c")).OK)
	}
	r := h.req(governor.KindSlot, T0, lim, "c")
	r.Try = true
	g := h.reserve(r)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitConnectionRate, g.Decision.Limit)
	assert.True(t, T0.Add(time.Second).Equal(g.Decision.RetryAt))
	// Events do not take connection tokens.
	require.True(t, h.reserve(h.req(governor.KindEvent, T0, lim, "c")).OK)
}

func calendarQuota(h *harness) {
	t := h.t
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	lim := governor.Limits{Quota: governor.PerDay(2, tokyo)}
	// 23:30 in Tokyo.
	at := time.Date(2031, 3, 7, 23, 30, 0, 0, tokyo)
	midnight := time.Date(2031, 3, 8, 0, 0, 0, 0, tokyo)
	for range 2 {
		require.True(t, h.reserve(h.req(governor.KindEvent, at, lim, "mb")).OK)
	}
	r := h.req(governor.KindEvent, at, lim, "mb")
	r.Try = true
	g := h.reserve(r)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitQuota, g.Decision.Limit)
	assert.True(t, midnight.Equal(g.Decision.RetryAt), "retry at %v", g.Decision.RetryAt)
	for range 2 {
		require.True(t, h.reserve(h.req(governor.KindEvent, midnight, lim, "mb")).OK)
	}
	r = h.req(governor.KindEvent, midnight.Add(time.Hour), lim, "mb")
	r.Try = true
	assert.False(t, h.reserve(r).OK)
	// Slots do not use quota.
	assert.True(t, h.reserve(h.req(governor.KindSlot, midnight, lim, "mb")).OK)
}

func rollingQuota(h *harness) {
	t := h.t
	lim := governor.Limits{Quota: governor.Quota{Max: 2, Window: time.Hour}}
	require.True(t, h.reserve(h.req(governor.KindEvent, T0, lim, "r")).OK)
	require.True(t, h.reserve(h.req(governor.KindEvent, T0.Add(10*time.Minute), lim, "r")).OK)
	r := h.req(governor.KindEvent, T0.Add(30*time.Minute), lim, "r")
	r.Try = true
	g := h.reserve(r)
	require.False(t, g.OK)
	assert.True(t, T0.Add(time.Hour).Equal(g.Decision.RetryAt))
	assert.True(t, h.reserve(h.req(governor.KindEvent, T0.Add(time.Hour), lim, "r")).OK)
}

func sendWindow(h *harness) {
	t := h.t
	lim := governor.Limits{Window: governor.Window{Start: 9 * time.Hour, End: 17 * time.Hour}}
	early := time.Date(2031, 3, 7, 6, 0, 0, 0, time.UTC)
	for _, kind := range []governor.Kind{governor.KindSlot, governor.KindEvent} {
		r := h.req(kind, early, lim, "w")
		r.Try = true
		g := h.reserve(r)
		require.False(t, g.OK, kind)
		assert.Equal(t, governor.LimitWindow, g.Decision.Limit)
		assert.True(t, early.Add(3*time.Hour).Equal(g.Decision.RetryAt))
	}
	assert.True(t, h.reserve(h.req(governor.KindEvent, early.Add(3*time.Hour), lim, "w")).OK)
}

func suspendResume(h *harness) {
	t := h.t
	require.NoError(t, h.s.Suspend(h.ctx, T0, h.key("k"), T0.Add(time.Hour), "operator"))
	r := h.req(governor.KindSlot, T0.Add(time.Minute), governor.Limits{}, "k")
	r.Try = true
	g := h.reserve(r)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitSuspended, g.Decision.Limit)
	assert.Equal(t, "operator", g.Decision.Reason)
	assert.True(t, T0.Add(time.Hour).Equal(g.Decision.RetryAt))
	assert.True(t, T0.Add(time.Hour).Equal(h.state(T0, "k").SuspendedUntil))
	assert.True(t, h.reserve(h.req(governor.KindEvent, T0.Add(time.Hour), governor.Limits{}, "k")).OK, "suspension over")
	require.NoError(t, h.s.Suspend(h.ctx, T0, h.key("k"), T0.Add(5*time.Hour), "again"))
	require.NoError(t, h.s.Resume(h.ctx, T0.Add(2*time.Hour), h.key("k")))
	assert.True(t, h.reserve(h.req(governor.KindEvent, T0.Add(2*time.Hour), governor.Limits{}, "k")).OK, "resumed")
}

func fifoQueue(h *harness) {
	t := h.t
	one := governor.Limits{MaxConcurrency: 1}
	holder := h.req(governor.KindSlot, T0, one, "q")
	require.True(t, h.reserve(holder).OK)
	first := h.req(governor.KindSlot, T0.Add(time.Second), one, "q")
	g := h.reserve(first)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitConcurrency, g.Decision.Limit)
	second := h.req(governor.KindSlot, T0.Add(2*time.Second), one, "q")
	require.False(t, h.reserve(second).OK)
	assert.Equal(t, 2, h.state(T0, "q").Waiting)
	holder.Now = T0.Add(3 * time.Second)
	require.NoError(t, h.s.Release(h.ctx, holder))
	// The second may not overtake the first.
	second.Now = T0.Add(3 * time.Second)
	g = h.reserve(second)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitQueue, g.Decision.Limit)
	// A Try request does not overtake either, and does not queue.
	try := h.req(governor.KindSlot, T0.Add(3*time.Second), one, "q")
	try.Try = true
	assert.False(t, h.reserve(try).OK)
	first.Now = T0.Add(3 * time.Second)
	require.True(t, h.reserve(first).OK)
	first.Now = T0.Add(4 * time.Second)
	require.NoError(t, h.s.Release(h.ctx, first))
	second.Now = T0.Add(4 * time.Second)
	require.True(t, h.reserve(second).OK)
	assert.Equal(t, 0, h.state(T0.Add(4*time.Second), "q").Waiting)
	// A cancelled waiter leaves the queue.
	third := h.req(governor.KindSlot, T0.Add(5*time.Second), one, "q")
	require.False(t, h.reserve(third).OK)
	third.Now = T0.Add(6 * time.Second)
	require.NoError(t, h.s.Cancel(h.ctx, third, governor.Grant{}))
	assert.Equal(t, 0, h.state(T0.Add(6*time.Second), "q").Waiting)
}

func wakeOnRelease(h *harness) {
	t := h.t
	one := governor.Limits{MaxConcurrency: 1}
	holder := h.req(governor.KindSlot, T0, one, "w")
	require.True(t, h.reserve(holder).OK)
	waiter := h.req(governor.KindSlot, T0, one, "w")
	g := h.reserve(waiter)
	require.False(t, g.OK)
	if g.Wake == nil {
		t.Skip("the store gives no Wake channel (the governor polls)")
	}
	holder.Now = T0.Add(time.Second)
	require.NoError(t, h.s.Release(h.ctx, holder))
	select {
	case <-g.Wake:
	case <-time.After(5 * time.Second): // real time: a store's notification path
		t.Fatal("no wake-up after a release")
	}
	waiter.Now = T0.Add(time.Second)
	assert.True(t, h.reserve(waiter).OK)
}

func feedbackAIMD(h *harness) {
	t := h.t
	lim := governor.Limits{MaxConcurrency: 8}
	var rs []*governor.Request
	for range 8 {
		r := h.req(governor.KindSlot, T0, lim, "g")
		require.True(t, h.reserve(r).OK)
		rs = append(rs, r)
	}
	fb := func(now time.Time, s governor.Signal) {
		require.NoError(t, h.s.Feedback(h.ctx, now, h.key("g"), lim, s))
	}
	for range 3 { // one failure run: work started at T0
		fb(T0.Add(time.Second), governor.Signal{Kind: governor.Congestion, Started: T0, Reason: "421 4.4.5"})
	}
	st := h.state(T0.Add(time.Second), "g")
	assert.Equal(t, 4, st.Concurrency, "halved once")
	assert.Equal(t, "421 4.4.5", st.LastReason)
	for _, r := range rs {
		r.Now = T0.Add(2 * time.Second)
		require.NoError(t, h.s.Release(h.ctx, r))
	}
	fb(T0.Add(3*time.Second), governor.Signal{Kind: governor.Congestion, Started: T0.Add(2 * time.Second)})
	assert.Equal(t, 2, h.state(T0.Add(3*time.Second), "g").Concurrency, "a new run halves again")
	for range 3 {
		fb(T0.Add(4*time.Second), governor.Signal{Kind: governor.Success, Started: T0.Add(3 * time.Second)})
	}
	assert.Equal(t, 3, h.state(T0.Add(4*time.Second), "g").Concurrency, "2 + 1/2 + 1/2.5 + 1/2.9")
	for range 10 {
		fb(T0.Add(4*time.Second), governor.Signal{Kind: governor.Success, Started: T0.Add(3 * time.Second)})
	}
	assert.Equal(t, 3, h.state(T0.Add(4*time.Second), "g").Concurrency,
		"growth stops at what the receiver accepted (one below the 4 allowed) until ProbeAfter")
	for range 4 {
		fb(T0.Add(11*time.Minute), governor.Signal{Kind: governor.Success, Started: T0.Add(11 * time.Minute)})
	}
	assert.Equal(t, 4, h.state(T0.Add(11*time.Minute), "g").Concurrency, "probing again after ProbeAfter")
	// Enforced on slots.
	for i := range 5 {
		r := h.req(governor.KindSlot, T0.Add(11*time.Minute), lim, "g")
		r.Try = true
		assert.Equal(t, i < 4, h.reserve(r).OK, "slot %d", i)
	}
}

func feedbackRateLimited(h *harness) {
	t := h.t
	lim := governor.Limits{Rate: 2, Burst: 1, Adaptive: governor.Adaptive{RateFor: time.Minute}}
	require.NoError(t, h.s.Feedback(h.ctx, T0, h.key("r"), lim, governor.Signal{Kind: governor.RateLimited, Started: T0}))
	require.NoError(t, h.s.Feedback(h.ctx, T0, h.key("r"), lim, governor.Signal{Kind: governor.RateLimited, Started: T0}))
	require.True(t, h.reserve(h.req(governor.KindEvent, T0, lim, "r")).OK)
	g := h.reserve(h.req(governor.KindEvent, T0, lim, "r"))
	require.True(t, g.OK)
	assert.True(t, T0.Add(time.Second).Equal(g.Start), "rate halved once to 1/s: start %v", g.Start)
	assert.InDelta(t, 2, float64(h.state(T0.Add(2*time.Minute), "r").Rate), 1e-9, "restored after RateFor")
	// Without a rate the key pauses for RatePause.
	free := governor.Limits{Adaptive: governor.Adaptive{RatePause: 30 * time.Second}}
	require.NoError(t, h.s.Feedback(h.ctx, T0, h.key("free"), free, governor.Signal{Kind: governor.RateLimited}))
	r := h.req(governor.KindEvent, T0, free, "free")
	r.Try = true
	g = h.reserve(r)
	require.False(t, g.OK)
	assert.True(t, T0.Add(30*time.Second).Equal(g.Decision.RetryAt))
}

func feedbackCohort(h *harness) {
	t := h.t
	lim := governor.Limits{Adaptive: governor.Adaptive{FailureCohort: 3, SuspendFor: time.Minute}}
	fb := func(k governor.SignalKind) {
		require.NoError(t, h.s.Feedback(h.ctx, T0, h.key("f"), lim, governor.Signal{Kind: k, Reason: "timeout"}))
	}
	fb(governor.Failure)
	fb(governor.Failure)
	fb(governor.Success)
	fb(governor.Failure)
	fb(governor.Failure)
	r := h.req(governor.KindSlot, T0, lim, "f")
	r.Try = true
	require.True(t, h.reserve(r).OK, "a success restarts the count")
	fb(governor.Failure)
	r = h.req(governor.KindSlot, T0, lim, "f")
	r.Try = true
	g := h.reserve(r)
	require.False(t, g.OK)
	assert.Equal(t, governor.LimitSuspended, g.Decision.Limit)
	assert.True(t, strings.Contains(g.Decision.Reason, "timeout"), g.Decision.Reason)
	assert.True(t, T0.Add(time.Minute).Equal(g.Decision.RetryAt))
}
