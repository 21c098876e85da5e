package redisstore

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemail/sluice/governor"
	"golang.org/x/time/rate"
)

// The script receives each key's Limits as one space-separated string of
// numbers in nanoseconds, with the governor's defaults applied (as the
// in-memory engine compiles them), so that Lua does no policy work.

// maxInterval is the in-memory engine's cap on intervals (math.MaxInt64/4).
const maxInterval = math.MaxInt64 / 4

// interval converts a rate in events per second to nanoseconds per event;
// 0 for unlimited. It matches the in-memory engine.
func interval(r float64) int64 {
	if r <= 0 || math.IsInf(r, 1) {
		return 0
	}
	iv := 1e9 / r
	if iv < 1 {
		return 1
	}
	if iv > maxInterval {
		return maxInterval
	}
	return int64(iv)
}

func burstOf(b int) int64 {
	if b <= 0 {
		return 1
	}
	return int64(b)
}

// encodeLimits renders l for the script (see parseL in store.lua).
func encodeLimits(l governor.Limits) string {
	var b strings.Builder
	b.Grow(128)
	n := func(v int64) {
		b.WriteString(strconv.FormatInt(v, 10))
		b.WriteByte(' ')
	}
	f := func(v float64) {
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		b.WriteByte(' ')
	}
	a := l.Adaptive
	initial := l.MaxConcurrency
	if a.InitialConcurrency > 0 && a.InitialConcurrency < l.MaxConcurrency {
		initial = a.InitialConcurrency
	}
	ival, civl := interval(float64(l.Rate)), interval(float64(l.ConnectionRate))
	n(int64(l.MaxConcurrency))
	n(int64(initial))
	n(ival)
	n(burstOf(l.Burst))
	n(civl)
	n(burstOf(l.ConnectionBurst))
	q := l.Quota
	if q.Max > 0 {
		n(int64(q.Max))
		n(int64(q.Window))
	} else {
		n(0)
		n(0)
	}
	if q.Max > 0 && q.Calendar != governor.Rolling {
		n(int64(q.Calendar))
		loc := "UTC"
		if q.Location != nil {
			loc = q.Location.String()
		}
		// the calendar and zone: a change keeps the count but recomputes its end
		b.WriteString(strconv.Itoa(int(q.Calendar)) + "/" + strings.ReplaceAll(loc, " ", "_"))
		b.WriteByte(' ')
	} else {
		b.WriteString("0 - ")
	}
	d := a.WithDefaults()
	f(d.Increase)
	f(d.Decrease)
	n(int64(d.ProbeAfter))
	n(int64(a.FailureCohort))
	n(int64(d.SuspendFor))
	f(d.RateFactor)
	n(int64(d.RateFor))
	n(int64(d.RatePause))
	if ival > 0 || civl > 0 {
		b.WriteString("1")
	} else {
		b.WriteString("0")
	}
	return b.String()
}

// windowArg is the send window at now for the script: "0" open, "-1"
// closed with no known opening, else the offset in ns of its next opening.
func windowArg(w governor.Window, now time.Time) string {
	if w.Start == w.End && len(w.Days) == 0 {
		return "0"
	}
	next := w.NextOpen(now)
	switch {
	case next.IsZero():
		return "-1"
	case !next.After(now):
		return "0"
	}
	return strconv.FormatInt(int64(next.Sub(now)), 10)
}

// quotaEndArg is the offset of the end of the calendar quota period at now.
func quotaEndArg(q governor.Quota, now time.Time) string {
	if q.Max <= 0 || q.Calendar == governor.Rolling {
		return "0"
	}
	_, end := q.Period(now)
	return strconv.FormatInt(int64(end.Sub(now)), 10)
}

// scaleLimits divides l's limits by n for a process that runs on its own
// while Redis is unreachable (Options.Processes); every limit that was set
// keeps at least 1.
func scaleLimits(l governor.Limits, n int) governor.Limits {
	if n <= 1 {
		return l
	}
	div := func(v int) int {
		if v <= 0 {
			return v
		}
		return max(v/n, 1)
	}
	l.MaxConcurrency = div(l.MaxConcurrency)
	l.Adaptive.InitialConcurrency = div(l.Adaptive.InitialConcurrency)
	l.Burst = div(l.Burst)
	l.ConnectionBurst = div(l.ConnectionBurst)
	l.Quota.Max = div(l.Quota.Max)
	if l.Rate > 0 && !math.IsInf(float64(l.Rate), 1) {
		l.Rate /= rate.Limit(n)
	}
	if l.ConnectionRate > 0 && !math.IsInf(float64(l.ConnectionRate), 1) {
		l.ConnectionRate /= rate.Limit(n)
	}
	return l
}
