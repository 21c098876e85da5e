package backoff

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/sluicemail/sluice/smtpcode"
)

// Rand is a source of uniform random numbers in [0, 1) for jitter.
// *math/rand/v2.Rand and *math/rand.Rand satisfy it; a fixed source makes
// every decision reproducible. Values outside [0, 1) are clamped.
type Rand interface {
	Float64() float64
}

// Settings configures a Policy. The zero value gives the documented
// defaults; so does each zero field.
type Settings struct {
	// MaxAge is how long after its first attempt a message may still be
	// retried. 0 means DefaultMaxAge (5 days, Postfix's maximal_queue_lifetime).
	MaxAge time.Duration

	// MaxHint caps a Classification.RetryAfter before it is used as a lower
	// bound. 0 means DefaultMaxHint (24 h).
	MaxHint time.Duration

	// Default is the schedule of every category that has no built-in
	// schedule of its own and no entry in Schedules (system, network, other,
	// policy, reputation, ...). Zero fields take Postfix's: 5 min doubling
	// to 4000 s, jitter DefaultRandomizationFactor.
	Default Schedule

	// Schedules overrides the schedule of single categories. Zero fields
	// take that category's built-in schedule (DefaultSchedule), or Default
	// for a category without one.
	Schedules map[smtpcode.Category]Schedule

	// Rand is the jitter source of Retry and of the BackOff adapter; nil
	// means math/rand/v2's global source. Policy serialises calls to it, so
	// a *rand.Rand may be shared. Policy.NextAttempt takes its own source.
	Rand Rand
}

// Policy decides when to retry a message: after a failed attempt, from the
// reply's classification, the attempt number, the time of the first attempt
// and now (NextAttempt); after a wait for a governor limit, which is not an
// attempt (Postpone). It is immutable and safe for concurrent use. The zero
// Policy, and a nil *Policy, use the defaults.
type Policy struct {
	ok        bool
	maxAge    time.Duration
	maxHint   time.Duration
	schedules [256]Schedule // by Category, resolved
	intervals [256]intervalTable
	rnd       Rand // locked; nil means the global source
}

// NewPolicy returns a Policy with the given settings, or an error wrapping
// ErrInvalid that names the first setting out of range.
func NewPolicy(s Settings) (*Policy, error) {
	p := &Policy{ok: true, maxAge: s.MaxAge, maxHint: s.MaxHint}
	if p.maxAge == 0 {
		p.maxAge = DefaultMaxAge
	}
	if p.maxHint == 0 {
		p.maxHint = DefaultMaxHint
	}
	if p.maxAge < 0 || p.maxAge > maxDuration {
		return nil, fmt.Errorf("%w: MaxAge %v out of range (0, %v]", ErrInvalid, s.MaxAge, maxDuration)
	}
	if p.maxHint < 0 || p.maxHint > maxDuration {
		return nil, fmt.Errorf("%w: MaxHint %v out of range (0, %v]", ErrInvalid, s.MaxHint, maxDuration)
	}
	def := s.Default.fillFrom(defaultOther)
	if err := def.validate(); err != nil {
		return nil, fmt.Errorf("%w: Default schedule: %v", ErrInvalid, err)
	}
	for i := range p.schedules {
		c := smtpcode.Category(i)
		base := def
		if b, ok := builtinSchedules[c]; ok {
			base = b
		}
		sched := base
		if o, ok := s.Schedules[c]; ok {
			sched = o.fillFrom(base)
			if err := sched.validate(); err != nil {
				return nil, fmt.Errorf("%w: schedule of category %v: %v", ErrInvalid, c, err)
			}
		}
		p.schedules[i] = sched
	}
	tables := map[Schedule]intervalTable{} // most categories share a schedule
	for i, sched := range p.schedules {
		t, ok := tables[sched]
		if !ok {
			t = sched.table()
			tables[sched] = t
		}
		p.intervals[i] = t
	}
	if s.Rand != nil {
		p.rnd = &lockedRand{r: s.Rand}
	}
	return p, nil
}

var defaultPolicy = func() *Policy {
	p, err := NewPolicy(Settings{})
	if err != nil {
		panic("backoff: built-in defaults are invalid: " + err.Error())
	}
	return p
}()

// resolved returns p, or the default policy for a nil or zero Policy.
func (p *Policy) resolved() *Policy {
	if p == nil || !p.ok {
		return defaultPolicy
	}
	return p
}

// Schedule returns the schedule the policy applies to category c.
func (p *Policy) Schedule(c smtpcode.Category) Schedule { return p.resolved().schedules[c] }

// MaxAge returns the policy's maximum age.
func (p *Policy) MaxAge() time.Duration { return p.resolved().maxAge }

// Decision says when to make the next delivery attempt.
type Decision struct {
	// At is when to try next; Delay is At minus now.
	At    time.Time
	Delay time.Duration
	// Interval is the schedule's interval before jitter (0 for Postpone).
	Interval time.Duration
	// Hint is the server's or rule's RetryAfter (capped at MaxHint) when it
	// raised the delay above the schedule's; 0 otherwise.
	Hint time.Duration
	// LastChance is true when At was brought forward to the message's
	// maximum age: one final attempt then, rather than expiring mid-interval.
	LastChance bool
}

// String describes the decision for logs: "retry in 33s at
// 2026-12-04T09:00:33Z (interval 30s, hint 30s, last chance)".
func (d Decision) String() string {
	msg := fmt.Sprintf("retry in %v at %s", d.Delay, d.At.Format(time.RFC3339))
	var notes []string
	if d.Interval > 0 {
		notes = append(notes, "interval "+d.Interval.String())
	}
	if d.Hint > 0 {
		notes = append(notes, "hint "+d.Hint.String())
	}
	if d.LastChance {
		notes = append(notes, "last chance")
	}
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, ", ") + ")"
	}
	return msg
}

// NextAttempt decides what to do after delivery attempt number attempt
// (1 for the first) failed with classification c. first is when the first
// attempt was made and now is the time of the decision; rnd is the jitter
// source (nil means math/rand/v2's global one). A call that decides to retry
// draws exactly one number from rnd; the result depends only on the
// arguments and that number.
//
// Count as attempts only real delivery attempts: an SMTP transaction that
// got a reply or failed on the network. Time spent waiting for a governor
// limit is not an attempt; report it with Postpone, which takes no attempt
// number and so cannot advance one.
//
// The delay is the category's schedule for this attempt, jittered; a
// RetryAfter hint is a lower bound, itself jittered upwards only, so that a
// fleet deferred by the same reply does not come back in lockstep.
//
// The error is a *GiveUpError (errors.Is ErrPermanent or ErrMaxAge) when the
// message must not be retried: c is not Transient, or now is at or past the
// maximum age, or the hint forbids a retry before it. An error wrapping
// ErrInvalid means bad arguments (attempt < 1, a zero time), never "give up".
func (p *Policy) NextAttempt(c smtpcode.Classification, attempt int, first, now time.Time, rnd Rand) (Decision, error) {
	p = p.resolved()
	if attempt < 1 {
		return Decision{}, fmt.Errorf("%w: attempt %d: attempts count from 1", ErrInvalid, attempt)
	}
	if first.IsZero() || now.IsZero() {
		return Decision{}, fmt.Errorf("%w: first attempt or current time is zero", ErrInvalid)
	}
	age := nonNegative(now.Sub(first)) // clocks may disagree a little
	giveUp := func(reason error) (Decision, error) {
		return Decision{}, &GiveUpError{Reason: reason, Classification: c, Attempts: attempt, Age: age}
	}
	if !c.Transient {
		return giveUp(ErrPermanent)
	}
	if age >= p.maxAge {
		return giveUp(ErrMaxAge)
	}

	s := p.schedules[c.Category]
	u := draw(rnd)
	d := Decision{Interval: s.interval(p.intervals[c.Category], attempt)}
	d.Delay = jitter(d.Interval, s.RandomizationFactor, u)
	hint := min(c.RetryAfter, p.maxHint)
	if hint > d.Delay {
		// Jitter upwards only: the hint is a lower bound.
		d.Hint = hint
		d.Delay = hint + time.Duration(s.RandomizationFactor*u*float64(hint))
	}

	deadline := first.Add(p.maxAge)
	d.At = now.Add(d.Delay)
	if d.At.After(deadline) {
		if now.Add(hint).After(deadline) {
			return giveUp(ErrMaxAge) // the server will not take it before it expires
		}
		d.At, d.Delay, d.LastChance = deadline, deadline.Sub(now), true
	}
	return d, nil
}

// Postpone reschedules a message that was NOT attempted because a governor
// limit asked it to wait (a concurrency slot, a rate token, a daily quota).
// It is not an attempt: it takes no attempt number and cannot advance one,
// adds no backoff and no jitter (the governor jitters its own waits), and
// only checks the maximum age: a message whose wait would end after it
// gives up with a *GiveUpError wrapping ErrMaxAge, as Postfix bounces mail
// that sat in its queue for maximal_queue_lifetime whatever the cause.
// A negative wait counts as 0.
func (p *Policy) Postpone(wait time.Duration, first, now time.Time) (Decision, error) {
	p = p.resolved()
	if first.IsZero() || now.IsZero() {
		return Decision{}, fmt.Errorf("%w: first attempt or current time is zero", ErrInvalid)
	}
	wait = nonNegative(wait)
	age := nonNegative(now.Sub(first))
	at := now.Add(wait)
	if age >= p.maxAge || at.After(first.Add(p.maxAge)) {
		return Decision{}, &GiveUpError{Reason: ErrMaxAge, Age: age}
	}
	return Decision{At: at, Delay: wait}, nil
}

// Rand returns the policy's Settings.Rand, safe for concurrent use, or nil
// when none was set (NextAttempt then uses math/rand/v2's global source).
// Retry and the BackOff adapter pass it to NextAttempt; a caller driving
// NextAttempt itself can too, so that one seed makes a whole run repeatable.
func (p *Policy) Rand() Rand { return p.resolved().rnd }

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }

// draw returns one number in [0, 1) from r, or from the global source.
func draw(r Rand) float64 {
	if r == nil {
		return rand.Float64()
	}
	u := r.Float64()
	switch {
	case math.IsNaN(u) || u < 0:
		return 0
	case u >= 1:
		return math.Nextafter(1, 0)
	}
	return u
}

// lockedRand serialises a caller's source, which may not be safe for
// concurrent use (*rand.Rand is not).
type lockedRand struct {
	mu sync.Mutex
	r  Rand
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}
