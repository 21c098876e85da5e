package governor

import (
	"cmp"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the limits of one key. The zero value of every field means
// "no limit of this kind", so the zero Limits let everything through at once.
// A Policy maps keys to Limits.
type Limits struct {
	// MaxConcurrency is the number of slots the key has: Acquire holds one
	// until Release (deliver holds one per open connection). 0: unlimited.
	// Feedback may lower the effective number below it, never raise it above.
	MaxConcurrency int

	// Rate and Burst form a token bucket taken by Take (one token per event,
	// for example per message). Rate is in events per second with sub-second
	// precision (rate.Every(time.Minute) is one a minute). Rate 0 or rate.Inf:
	// unlimited (unlike rate.Limiter, where 0 allows nothing: use Suspend to
	// stop a key). Burst 0 with a Rate means 1 (rate.Limiter's burst 0 would
	// refuse every event).
	Rate  rate.Limit
	Burst int

	// ConnectionRate and ConnectionBurst form a second token bucket, taken by
	// Acquire when it takes a slot (new connections per second). Same zero
	// values as Rate and Burst.
	ConnectionRate  rate.Limit
	ConnectionBurst int

	// Quota caps the events (Take) per rolling or calendar window.
	// The zero Quota is no quota.
	Quota Quota

	// Window restricts when slots and events start to certain hours of the
	// day in a time zone. The zero Window is always open.
	Window Window

	// Jitter adds a uniformly random delay in [0, Jitter) to every blocking
	// Take, so that events spread out instead of leaving in lockstep.
	// 0: none. With several keys the largest Jitter applies (one draw).
	Jitter time.Duration

	// Adaptive sets how Feedback changes the key. Its zero value holds the
	// documented defaults.
	Adaptive Adaptive
}

// Calendar is a calendar period for quotas.
type Calendar uint8

// Calendar periods. Weeks start on Monday (ISO 8601).
const (
	Rolling Calendar = iota // not a calendar: a rolling window of Quota.Window
	Hour
	Day
	Week
	Month
)

var calendarNames = [...]string{"rolling", "hour", "day", "week", "month"}

func (c Calendar) String() string {
	if int(c) < len(calendarNames) {
		return calendarNames[c]
	}
	return "Calendar(" + itoa(int(c)) + ")"
}

// Quota is "at most Max events per window". With Calendar Rolling (the
// zero value) the window is the last Window of time (any span of that length
// holds at most Max events; the governor keeps one timestamp per event in the
// window, so prefer calendar windows for large quotas). With a calendar period
// the count resets at the period's boundaries in Location (nil: UTC): Day
// resets at local midnight, including across daylight-saving changes.
type Quota struct {
	Max      int            // 0: no quota
	Window   time.Duration  // rolling window length; required when Calendar is Rolling and Max > 0
	Calendar Calendar       // Rolling, Hour, Day, Week or Month
	Location *time.Location // time zone of calendar boundaries; nil: UTC
}

// PerDay returns a quota of max events per calendar day in loc (nil: UTC).
func PerDay(max int, loc *time.Location) Quota {
	return Quota{Max: max, Calendar: Day, Location: loc}
}

// Window is the part of each day during which work may start: from Start to
// End, both offsets from local midnight in Location (nil: UTC). Start == End
// means always open. End < Start wraps past midnight (22:00 to 06:00). Days,
// when non-empty, lists the weekdays on which a window starts. Work already
// started (a held slot) is not interrupted when the window closes. A window
// that can never open (Start 24h with End 0) is always closed: Open reports
// false and NextOpen the zero time, and the governor holds its keys (RetryAt
// unknown) until a new policy opens them.
type Window struct {
	Start, End time.Duration
	Days       []time.Weekday
	Location   *time.Location
}

// Adaptive sets how Feedback adapts a key. Zero values are the defaults
// given on each field.
type Adaptive struct {
	// InitialConcurrency is the effective concurrency of a new (or evicted)
	// key. 0: MaxConcurrency (no slow start). Postfix starts each destination
	// at 5 (initial_destination_concurrency) and grows from there.
	InitialConcurrency int

	// Increase is the additive increase: each Success adds Increase/c to the
	// effective concurrency c, so c grows by Increase per c successes.
	// 0: 1 (Postfix's positive feedback 1/concurrency).
	Increase float64

	// Decrease multiplies the effective concurrency on the first Congestion
	// signal of a failure run. 0: 0.5 (TCP's AIMD factor).
	Decrease float64

	// ProbeAfter is how long, after a congestion decrease, growth stops at
	// the concurrency the receiver was seen to accept: the slots held when
	// the signal came minus one (the refused holder), or, when no other slot
	// was held, one below the concurrency before the decrease; never below
	// the decreased value nor above the value before it. After ProbeAfter
	// the key grows (probes) again. 0: 10 minutes.
	ProbeAfter time.Duration

	// FailureCohort is the number of Failure signals in a row (no Success
	// between them) that suspends the key for SuspendFor. 0: the key's
	// effective concurrency, or 5 when it has none: Postfix suspends a
	// destination after one failed pseudo-cohort (a concurrency's worth of
	// deliveries; destination_concurrency_failed_cohort_limit = 1).
	FailureCohort int

	// SuspendFor is the cool-down after a failed cohort. 0: 5 minutes
	// (Postfix minimal_backoff_time = 300s).
	SuspendFor time.Duration

	// RateFactor multiplies Rate and ConnectionRate on a RateLimited signal,
	// for RateFor; then they are restored. 0: 0.5. A key without a rate is
	// instead paused for RatePause.
	RateFactor float64

	// RateFor is how long a RateLimited reduction lasts. 0: 10 minutes.
	RateFor time.Duration

	// RatePause is how long a key without a configured rate pauses on a
	// RateLimited signal. 0: 30 seconds (a retry after about 30 s usually
	// succeeds at Gmail).
	RatePause time.Duration
}

// WithDefaults returns a with every zero field that has a fixed default
// filled in (Increase, Decrease, ProbeAfter, SuspendFor, RateFactor,
// RateFor, RatePause). InitialConcurrency and FailureCohort stay as they
// are: their defaults depend on the key's state. Every Store applies
// Feedback with these values, so the stores cannot drift apart.
func (a Adaptive) WithDefaults() Adaptive {
	a.Increase = cmp.Or(a.Increase, DefaultIncrease)
	a.Decrease = cmp.Or(a.Decrease, DefaultDecrease)
	a.ProbeAfter = cmp.Or(a.ProbeAfter, DefaultProbeAfter)
	a.SuspendFor = cmp.Or(a.SuspendFor, DefaultSuspendFor)
	a.RateFactor = cmp.Or(a.RateFactor, DefaultRateFactor)
	a.RateFor = cmp.Or(a.RateFor, DefaultRateFor)
	a.RatePause = cmp.Or(a.RatePause, DefaultRatePause)
	return a
}

// Documented defaults of Adaptive.
const (
	DefaultIncrease      = 1.0
	DefaultDecrease      = 0.5
	DefaultProbeAfter    = 10 * time.Minute
	DefaultFailureCohort = 5
	DefaultSuspendFor    = 5 * time.Minute
	DefaultRateFactor    = 0.5
	DefaultRateFor       = 10 * time.Minute
	DefaultRatePause     = 30 * time.Second

	// PostfixInitialConcurrency is Postfix's initial_destination_concurrency,
	// a good Adaptive.InitialConcurrency for unknown receivers.
	PostfixInitialConcurrency = 5

	// DefaultIdleTimeout is how long a quiescent key is kept (Config.IdleTimeout).
	DefaultIdleTimeout = 10 * time.Minute
)
