package backoff

import (
	"fmt"
	"math"
	"time"

	cbackoff "github.com/cenkalti/backoff/v4"

	"github.com/sluicemail/sluice/smtpcode"
)

// Defaults. Each is explained, with its source, in the package doc.
const (
	// DefaultMaxAge is how long a message may keep being retried, counted
	// from its first attempt: Postfix's maximal_queue_lifetime (5d).
	DefaultMaxAge = 5 * 24 * time.Hour

	// DefaultMaxHint caps a server's or provider rule's RetryAfter, so that
	// a garbled or hostile "try again in 9999 hours" can neither park a
	// message for ever nor make it expire at once.
	DefaultMaxHint = 24 * time.Hour

	// DefaultRandomizationFactor is the jitter of every schedule but
	// greylist's: each delay is drawn from [d·0.75, d·1.25].
	DefaultRandomizationFactor = 0.25

	// maxDuration bounds every configured duration, far above any sane
	// setting, so that jitter arithmetic cannot overflow time.Duration.
	maxDuration = 100 * 365 * 24 * time.Hour
)

// Schedule is the exponential backoff of one category, in the terms of
// cenkalti/backoff's ExponentialBackOff: after failed attempt n the interval
// is InitialInterval·Multiplier^(n-1), capped at MaxInterval, then jittered
// by ±RandomizationFactor.
//
// In a Settings, a zero field takes the category's default (see
// DefaultSchedule); a negative RandomizationFactor turns jitter off.
type Schedule struct {
	// InitialInterval is the delay after the first failed attempt.
	InitialInterval time.Duration
	// Multiplier grows the interval after each failed attempt; at least 1.
	Multiplier float64
	// MaxInterval caps the interval before jitter.
	MaxInterval time.Duration
	// RandomizationFactor spreads each delay uniformly over
	// [d·(1-f), d·(1+f)], as ExponentialBackOff does; at most 1.
	RandomizationFactor float64
}

// Built-in schedules; the package doc gives their sources.
var (
	defaultOther = Schedule{ // Postfix: minimal_backoff_time 300s, doubling, maximal_backoff_time 4000s
		InitialInterval: 300 * time.Second, Multiplier: 2, MaxInterval: 4000 * time.Second,
		RandomizationFactor: DefaultRandomizationFactor,
	}
	builtinSchedules = map[smtpcode.Category]Schedule{
		smtpcode.Congestion: { // 421 4.4.5: a retry after about 30 s usually succeeds
			InitialInterval: 30 * time.Second, Multiplier: 2, MaxInterval: 5 * time.Minute,
			RandomizationFactor: DefaultRandomizationFactor,
		},
		smtpcode.RateLimit: { // 4.7.28, [TSS04], 4.7.650: minutes, then up to an hour
			InitialInterval: 5 * time.Minute, Multiplier: 2, MaxInterval: time.Hour,
			RandomizationFactor: DefaultRandomizationFactor,
		},
		smtpcode.Greylist: { // first retry 5-15 min, after postgrey's 300 s delay
			InitialInterval: 10 * time.Minute, Multiplier: 2, MaxInterval: time.Hour,
			RandomizationFactor: 0.5,
		},
		smtpcode.MailboxFull: { // a person must act: hours
			InitialInterval: time.Hour, Multiplier: 2, MaxInterval: 6 * time.Hour,
			RandomizationFactor: DefaultRandomizationFactor,
		},
	}
)

// DefaultSchedule returns the built-in schedule of category c. Categories
// without one of their own (system, network, other, and every other
// transient category) share Postfix's: 5 min doubling to 4000 s (~67 min).
func DefaultSchedule(c smtpcode.Category) Schedule {
	if s, ok := builtinSchedules[c]; ok {
		return s
	}
	return defaultOther
}

// fillFrom returns s with each zero field taken from base.
func (s Schedule) fillFrom(base Schedule) Schedule {
	if s.InitialInterval == 0 {
		s.InitialInterval = base.InitialInterval
	}
	if s.Multiplier == 0 {
		s.Multiplier = base.Multiplier
	}
	if s.MaxInterval == 0 {
		s.MaxInterval = base.MaxInterval
	}
	switch {
	case s.RandomizationFactor == 0:
		s.RandomizationFactor = base.RandomizationFactor
	case s.RandomizationFactor < 0:
		s.RandomizationFactor = 0
	}
	return s
}

// validate reports the first field of a resolved schedule that makes no sense.
func (s Schedule) validate() error {
	switch {
	case s.InitialInterval <= 0 || s.InitialInterval > maxDuration:
		return fmt.Errorf("InitialInterval %v out of range (0, %v]", s.InitialInterval, maxDuration)
	case s.MaxInterval < s.InitialInterval || s.MaxInterval > maxDuration:
		return fmt.Errorf("MaxInterval %v out of range [InitialInterval %v, %v]", s.MaxInterval, s.InitialInterval, maxDuration)
	case math.IsNaN(s.Multiplier) || math.IsInf(s.Multiplier, 0) || s.Multiplier < 1:
		return fmt.Errorf("Multiplier %v: must be a finite number >= 1", s.Multiplier)
	case math.IsNaN(s.RandomizationFactor) || s.RandomizationFactor < 0 || s.RandomizationFactor > 1:
		return fmt.Errorf("RandomizationFactor %v: must be within [0, 1]", s.RandomizationFactor)
	}
	return nil
}

// ExponentialBackOff returns a fresh cenkalti ExponentialBackOff with this
// schedule, no MaxElapsedTime (the Policy's maximum age replaces it) and the
// given clock (nil means cbackoff.SystemClock). Its jitter comes from
// math/rand's global source; Policy uses its own source instead, for
// determinism, with the same formula.
func (s Schedule) ExponentialBackOff(clock cbackoff.Clock) *cbackoff.ExponentialBackOff {
	if clock == nil {
		clock = cbackoff.SystemClock
	}
	b := &cbackoff.ExponentialBackOff{
		InitialInterval:     s.InitialInterval,
		RandomizationFactor: s.RandomizationFactor,
		Multiplier:          s.Multiplier,
		MaxInterval:         s.MaxInterval,
		Stop:                cbackoff.Stop,
		Clock:               clock,
	}
	b.Reset()
	return b
}

// fixedClock is a cbackoff.Clock that always answers the same instant, so
// that the ExponentialBackOff Policy drives never reads the wall clock.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// intervalTable holds a schedule's un-jittered intervals after attempts
// 1, 2, ..., as cenkalti's ExponentialBackOff computes them with jitter off.
type intervalTable struct {
	vals []time.Duration
	// settled is true when every later attempt gets the last value (the
	// interval reached MaxInterval or stopped growing).
	settled bool
}

// tableSize is enough for every schedule whose Multiplier is not very
// close to 1 to settle; longer ones fall back to stepping.
const tableSize = 64

// table steps a fresh ExponentialBackOff until the interval settles or the
// table is full.
func (s Schedule) table() intervalTable {
	noJitter := s
	noJitter.RandomizationFactor = 0
	b := noJitter.ExponentialBackOff(fixedClock{})
	var t intervalTable
	for len(t.vals) < tableSize {
		d := b.NextBackOff()
		if n := len(t.vals); n > 0 && d == t.vals[n-1] {
			t.settled = true
			break
		}
		t.vals = append(t.vals, d)
		if d == s.MaxInterval {
			t.settled = true
			break
		}
	}
	return t
}

// interval returns the un-jittered interval after failed attempt n >= 1.
func (s Schedule) interval(t intervalTable, n int) time.Duration {
	switch {
	case n <= len(t.vals):
		return t.vals[n-1]
	case t.settled:
		return t.vals[len(t.vals)-1]
	}
	// A multiplier so close to 1 that 64 steps did not settle: step on.
	noJitter := s
	noJitter.RandomizationFactor = 0
	b := noJitter.ExponentialBackOff(fixedClock{})
	var d time.Duration
	// The bound keeps a huge n cheap; every multiplier above 1.001 reaches
	// MaxInterval well before it.
	for i := 0; i < min(n, maxSteps); i++ {
		prev := d
		d = b.NextBackOff()
		if d == s.MaxInterval || d == prev {
			break
		}
	}
	return d
}

// maxSteps bounds the steps interval takes.
const maxSteps = 100_000

// jitter spreads d over [d·(1-f), d·(1+f)] with u in [0, 1), by the same
// formula as cenkalti's ExponentialBackOff (getRandomValueFromInterval).
func jitter(d time.Duration, f, u float64) time.Duration {
	if f == 0 {
		return d
	}
	delta := f * float64(d)
	lo, hi := float64(d)-delta, float64(d)+delta
	return time.Duration(lo + u*(hi-lo+1))
}
