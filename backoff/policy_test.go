package backoff

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/smtpcode"
)

// fixedRand always draws the same number. 0.5 makes every jittered delay
// equal to its interval (cenkalti's formula adds half a nanosecond, which
// truncates away); 0 gives the lower edge, almostOne the upper one.
type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }

const (
	mid       = fixedRand(0.5)
	low       = fixedRand(0)
	almostOne = fixedRand(0.9999999999)
)

var t0 = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

func transient(c smtpcode.Category) smtpcode.Classification {
	return smtpcode.Classification{Transient: true, Category: c, Rule: "test"}
}

func TestNextAttemptSchedulePerCategory(t *testing.T) {
	tests := []struct {
		cat     smtpcode.Category
		attempt int
		want    time.Duration
	}{
		{smtpcode.Congestion, 1, 30 * time.Second},
		{smtpcode.Congestion, 2, time.Minute},
		{smtpcode.Congestion, 3, 2 * time.Minute},
		{smtpcode.Congestion, 4, 4 * time.Minute},
		{smtpcode.Congestion, 5, 5 * time.Minute},
		{smtpcode.Congestion, 50, 5 * time.Minute},
		{smtpcode.RateLimit, 1, 5 * time.Minute},
		{smtpcode.RateLimit, 2, 10 * time.Minute},
		{smtpcode.RateLimit, 3, 20 * time.Minute},
		{smtpcode.RateLimit, 4, 40 * time.Minute},
		{smtpcode.RateLimit, 5, time.Hour},
		{smtpcode.RateLimit, 9, time.Hour},
		{smtpcode.Greylist, 1, 10 * time.Minute},
		{smtpcode.Greylist, 2, 20 * time.Minute},
		{smtpcode.Greylist, 3, 40 * time.Minute},
		{smtpcode.Greylist, 4, time.Hour},
		{smtpcode.MailboxFull, 1, time.Hour},
		{smtpcode.MailboxFull, 2, 2 * time.Hour},
		{smtpcode.MailboxFull, 3, 4 * time.Hour},
		{smtpcode.MailboxFull, 4, 6 * time.Hour},
		{smtpcode.MailboxFull, 10, 6 * time.Hour},
		// Postfix: 300s, doubling, capped at maximal_backoff_time 4000s.
		{smtpcode.System, 1, 300 * time.Second},
		{smtpcode.System, 2, 600 * time.Second},
		{smtpcode.System, 3, 1200 * time.Second},
		{smtpcode.System, 4, 2400 * time.Second},
		{smtpcode.System, 5, 4000 * time.Second},
		{smtpcode.System, 6, 4000 * time.Second},
		{smtpcode.Network, 1, 300 * time.Second},
		{smtpcode.Network, 5, 4000 * time.Second},
		{smtpcode.Other, 1, 300 * time.Second},
		{smtpcode.Other, 3, 1200 * time.Second},
		// Categories without a schedule of their own share Postfix's.
		{smtpcode.Policy, 2, 600 * time.Second},
		{smtpcode.Reputation, 1, 300 * time.Second},
		{smtpcode.UnknownDomain, 1, 300 * time.Second},
		{smtpcode.Category(200), 1, 300 * time.Second},
		// A huge attempt number is cheap and capped.
		{smtpcode.Congestion, math.MaxInt, 5 * time.Minute},
	}
	var p Policy // the zero Policy uses the defaults
	for _, tt := range tests {
		now := t0.Add(time.Minute)
		d, err := p.NextAttempt(transient(tt.cat), tt.attempt, t0, now, mid)
		require.NoError(t, err, "%v attempt %d", tt.cat, tt.attempt)
		assert.Equal(t, tt.want, d.Interval, "%v attempt %d: interval", tt.cat, tt.attempt)
		assert.Equal(t, tt.want, d.Delay, "%v attempt %d: delay", tt.cat, tt.attempt)
		assert.Equal(t, now.Add(tt.want), d.At, "%v attempt %d: at", tt.cat, tt.attempt)
		assert.Zero(t, d.Hint)
		assert.False(t, d.LastChance)
	}
}

func TestNextAttemptJitterBounds(t *testing.T) {
	tests := []struct {
		cat      smtpcode.Category
		attempt  int
		rnd      Rand
		min, max time.Duration // inclusive
	}{
		{smtpcode.Congestion, 1, low, 22500 * time.Millisecond, 22500 * time.Millisecond},
		{smtpcode.Congestion, 1, almostOne, 37500*time.Millisecond - time.Millisecond, 37500*time.Millisecond + time.Microsecond},
		// Greylist: the first retry comes 5 to 15 minutes later.
		{smtpcode.Greylist, 1, low, 5 * time.Minute, 5 * time.Minute},
		{smtpcode.Greylist, 1, almostOne, 15*time.Minute - time.Millisecond, 15*time.Minute + time.Microsecond},
		{smtpcode.System, 5, low, 3000 * time.Second, 3000 * time.Second},
		{smtpcode.System, 5, almostOne, 5000*time.Second - time.Millisecond, 5000*time.Second + time.Microsecond},
		// Out-of-range numbers from a source are clamped, not trusted.
		{smtpcode.System, 1, fixedRand(-3), 225 * time.Second, 225 * time.Second},
		{smtpcode.System, 1, fixedRand(7), 375*time.Second - time.Microsecond, 375*time.Second + time.Microsecond},
		{smtpcode.System, 1, fixedRand(math.NaN()), 225 * time.Second, 225 * time.Second},
	}
	for _, tt := range tests {
		d, err := (*Policy)(nil).NextAttempt(transient(tt.cat), tt.attempt, t0, t0, tt.rnd)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, d.Delay, tt.min, "%v attempt %d u=%v", tt.cat, tt.attempt, tt.rnd)
		assert.LessOrEqual(t, d.Delay, tt.max, "%v attempt %d u=%v", tt.cat, tt.attempt, tt.rnd)
	}
}

func TestNextAttemptJitterSpreadsAFleet(t *testing.T) {
	var p Policy
	rnd := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for range 200 {
		d, err := p.NextAttempt(transient(smtpcode.Greylist), 1, t0, t0, rnd)
		require.NoError(t, err)
		require.GreaterOrEqual(t, d.Delay, 5*time.Minute)
		require.LessOrEqual(t, d.Delay, 15*time.Minute+time.Nanosecond)
		seen[d.Delay.Truncate(time.Minute)] = true
	}
	// 200 messages greylisted together come back over the whole 10 minutes.
	assert.Len(t, seen, 10)
}

func TestNextAttemptIsDeterministic(t *testing.T) {
	var p Policy
	run := func() []Decision {
		rnd := rand.New(rand.NewPCG(42, 7))
		var out []Decision
		now := t0
		for attempt := 1; attempt <= 8; attempt++ {
			d, err := p.NextAttempt(transient(smtpcode.RateLimit), attempt, t0, now, rnd)
			require.NoError(t, err)
			out = append(out, d)
			now = d.At
		}
		return out
	}
	assert.Equal(t, run(), run())
}

func TestNextAttemptHints(t *testing.T) {
	withHint := func(c smtpcode.Category, h time.Duration) smtpcode.Classification {
		cl := transient(c)
		cl.RetryAfter = h
		return cl
	}
	tests := []struct {
		name      string
		c         smtpcode.Classification
		attempt   int
		rnd       Rand
		wantDelay time.Duration
		wantHint  time.Duration
	}{
		{"try again in 92 seconds, lower edge", withHint(smtpcode.Congestion, 92*time.Second), 1, low,
			92 * time.Second, 92 * time.Second},
		{"try again in 92 seconds, jittered upwards only", withHint(smtpcode.Congestion, 92*time.Second), 1, mid,
			92*time.Second + 11500*time.Millisecond, 92 * time.Second},
		{"retry in 5 minutes beats a 3m45s jittered schedule", withHint(smtpcode.RateLimit, 5*time.Minute), 1, low,
			5 * time.Minute, 5 * time.Minute},
		{"a hint below the schedule changes nothing", withHint(smtpcode.Congestion, 10*time.Second), 1, mid,
			30 * time.Second, 0},
		{"a hint below a later attempt's interval changes nothing", withHint(smtpcode.System, 5*time.Minute), 3, mid,
			1200 * time.Second, 0},
		{"a negative hint is ignored", withHint(smtpcode.System, -time.Hour), 1, mid,
			300 * time.Second, 0},
		{"an absurd hint is capped at 24h", withHint(smtpcode.RateLimit, 9999*time.Hour), 1, low,
			24 * time.Hour, 24 * time.Hour},
		{"a provider rule's known delay on a generic category", withHint(smtpcode.Other, time.Hour), 1, low,
			time.Hour, time.Hour},
	}
	var p Policy
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := p.NextAttempt(tt.c, tt.attempt, t0, t0, tt.rnd)
			require.NoError(t, err)
			assert.Equal(t, tt.wantDelay, d.Delay)
			assert.Equal(t, tt.wantHint, d.Hint)
			assert.GreaterOrEqual(t, d.Delay, min(tt.c.RetryAfter, DefaultMaxHint), "a hint is a lower bound")
		})
	}
}

func TestNextAttemptMaxAge(t *testing.T) {
	kumo, err := NewPolicy(Settings{MaxAge: 7 * 24 * time.Hour})
	require.NoError(t, err)
	day := 24 * time.Hour
	tests := []struct {
		name       string
		p          *Policy
		c          smtpcode.Classification
		attempt    int
		age        time.Duration
		wantErr    error // nil: retry
		wantDelay  time.Duration
		lastChance bool
	}{
		{"young message", nil, transient(smtpcode.System), 1, 0, nil, 300 * time.Second, false},
		{"clock skew: now before first counts as age 0", nil, transient(smtpcode.System), 1, -time.Minute, nil, 300 * time.Second, false},
		{"4 days old, interval fits", nil, transient(smtpcode.System), 30, 4 * day, nil, 4000 * time.Second, false},
		{"1 s before 5 days: a last chance at the deadline", nil, transient(smtpcode.System), 30, 5*day - time.Second, nil, time.Second, true},
		{"exactly 5 days", nil, transient(smtpcode.System), 30, 5 * day, ErrMaxAge, 0, false},
		{"6 days", nil, transient(smtpcode.Congestion), 2, 6 * day, ErrMaxAge, 0, false},
		{"KumoMTA's 7 days: 6 days is fine", kumo, transient(smtpcode.System), 30, 6 * day, nil, 4000 * time.Second, false},
		{"KumoMTA's 7 days reached", kumo, transient(smtpcode.System), 30, 7 * day, ErrMaxAge, 0, false},
		{"a hint that ends after the deadline forbids any retry", nil,
			smtpcode.Classification{Transient: true, Category: smtpcode.RateLimit, RetryAfter: 2 * time.Hour},
			3, 5*day - time.Hour, ErrMaxAge, 0, false},
		{"a hint below the schedule still forbids a retry after the deadline", nil,
			smtpcode.Classification{Transient: true, Category: smtpcode.System, RetryAfter: time.Hour},
			30, 5*day - 30*time.Minute, ErrMaxAge, 0, false},
		{"a jittered hint past the deadline: last chance at it", nil,
			smtpcode.Classification{Transient: true, Category: smtpcode.RateLimit, RetryAfter: time.Hour},
			1, 5*day - time.Hour - time.Minute, nil, time.Hour + time.Minute, true},
		{"permanent beats age", nil, smtpcode.Classification{Category: smtpcode.UnknownUser}, 1, 6 * day, ErrPermanent, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(tt.age)
			d, err := tt.p.NextAttempt(tt.c, tt.attempt, t0, now, mid)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var g *GiveUpError
				require.ErrorAs(t, err, &g)
				assert.Equal(t, tt.c, g.Classification)
				assert.Equal(t, tt.attempt, g.Attempts)
				assert.Equal(t, max(tt.age, 0), g.Age)
				assert.Zero(t, d)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantDelay, d.Delay)
			assert.Equal(t, now.Add(tt.wantDelay), d.At)
			assert.Equal(t, tt.lastChance, d.LastChance)
			assert.False(t, d.At.After(t0.Add(tt.p.MaxAge())), "never after the maximum age")
		})
	}
}

func TestNextAttemptPermanent(t *testing.T) {
	c := smtpcode.Classification{Category: smtpcode.UnknownUser, Scope: smtpcode.ScopeRecipient, Rule: "rfc3463-x.1.1"}
	_, err := (*Policy)(nil).NextAttempt(c, 1, t0, t0, mid)
	require.ErrorIs(t, err, ErrPermanent)
	assert.NotErrorIs(t, err, ErrMaxAge)
	assert.NotErrorIs(t, err, ErrInvalid)
	var g *GiveUpError
	require.ErrorAs(t, err, &g)
	assert.Equal(t, c, g.Classification)
	assert.Contains(t, err.Error(), "permanent failure")
	assert.Contains(t, err.Error(), "rfc3463-x.1.1")
	_, ok := g.Reply()
	assert.False(t, ok, "a Policy sees no reply")
}

func TestNextAttemptInvalidArguments(t *testing.T) {
	var p Policy
	tests := []struct {
		name    string
		attempt int
		first   time.Time
	}{
		{"attempt 0", 0, t0},
		{"negative attempt", -1, t0},
		{"zero first attempt time", 1, time.Time{}},
	}
	_, err := p.NextAttempt(transient(smtpcode.System), 1, t0, time.Time{}, mid)
	require.ErrorIs(t, err, ErrInvalid, "zero now")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.NextAttempt(transient(smtpcode.System), tt.attempt, tt.first, t0, mid)
			require.ErrorIs(t, err, ErrInvalid)
			var g *GiveUpError
			assert.False(t, errors.As(err, &g), "bad input must never read as give up")
		})
	}
}

func TestPostponeIsNotAnAttempt(t *testing.T) {
	var p Policy
	day := 24 * time.Hour
	tests := []struct {
		name    string
		wait    time.Duration
		age     time.Duration
		want    time.Duration
		wantErr error
	}{
		{"a concurrency slot in 3 s", 3 * time.Second, 0, 3 * time.Second, nil},
		{"a negative wait counts as 0", -time.Second, time.Hour, 0, nil},
		{"a daily quota reset that fits", 20 * time.Hour, 4 * day, 20 * time.Hour, nil},
		{"a daily quota reset after the maximum age", 20 * time.Hour, 4*day + 5*time.Hour, 0, ErrMaxAge},
		{"already past the maximum age", time.Second, 5 * day, 0, ErrMaxAge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(tt.age)
			d, err := p.Postpone(tt.wait, t0, now)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var g *GiveUpError
				require.ErrorAs(t, err, &g)
				assert.Zero(t, g.Attempts)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, Decision{At: now.Add(tt.want), Delay: tt.want}, d, "no backoff, no jitter")
		})
	}
	_, err := p.Postpone(time.Second, time.Time{}, t0)
	assert.ErrorIs(t, err, ErrInvalid)
}

func TestSettingsOverridePerCategory(t *testing.T) {
	p, err := NewPolicy(Settings{
		Default: Schedule{InitialInterval: 2 * time.Minute},
		Schedules: map[smtpcode.Category]Schedule{
			smtpcode.Congestion:  {InitialInterval: time.Minute},
			smtpcode.MailboxFull: {MaxInterval: 24 * time.Hour, Multiplier: 3},
			smtpcode.Reputation:  {InitialInterval: 30 * time.Minute, RandomizationFactor: -1},
		},
	})
	require.NoError(t, err)
	tests := []struct {
		cat     smtpcode.Category
		attempt int
		rnd     Rand
		want    time.Duration
	}{
		{smtpcode.Congestion, 1, mid, time.Minute},      // overridden initial
		{smtpcode.Congestion, 2, mid, 2 * time.Minute},  // built-in multiplier
		{smtpcode.Congestion, 4, mid, 5 * time.Minute},  // built-in cap
		{smtpcode.MailboxFull, 3, mid, 9 * time.Hour},   // built-in initial, new multiplier
		{smtpcode.MailboxFull, 5, mid, 24 * time.Hour},  // new cap
		{smtpcode.System, 1, mid, 2 * time.Minute},      // Default applies
		{smtpcode.System, 7, mid, 4000 * time.Second},   // Default's other fields are Postfix's
		{smtpcode.Policy, 2, mid, 4 * time.Minute},      // Default applies
		{smtpcode.RateLimit, 1, mid, 5 * time.Minute},   // a built-in category ignores Default
		{smtpcode.Reputation, 1, low, 30 * time.Minute}, // jitter off: the lower edge is the interval
		{smtpcode.Reputation, 2, almostOne, time.Hour},  // inherits Default's multiplier
	}
	for _, tt := range tests {
		d, err := p.NextAttempt(transient(tt.cat), tt.attempt, t0, t0, tt.rnd)
		require.NoError(t, err)
		assert.Equal(t, tt.want, d.Delay, "%v attempt %d", tt.cat, tt.attempt)
	}
	assert.Equal(t, Schedule{InitialInterval: time.Minute, Multiplier: 2, MaxInterval: 5 * time.Minute, RandomizationFactor: 0.25},
		p.Schedule(smtpcode.Congestion))
	assert.Equal(t, DefaultSchedule(smtpcode.Greylist), (*Policy)(nil).Schedule(smtpcode.Greylist))
	assert.Equal(t, DefaultMaxAge, (&Policy{}).MaxAge())
}

func TestNewPolicyRejectsNonsense(t *testing.T) {
	tests := []struct {
		name string
		s    Settings
	}{
		{"negative MaxAge", Settings{MaxAge: -time.Hour}},
		{"negative MaxHint", Settings{MaxHint: -time.Hour}},
		{"negative initial", Settings{Default: Schedule{InitialInterval: -time.Second}}},
		{"max below initial", Settings{Schedules: map[smtpcode.Category]Schedule{
			smtpcode.Congestion: {InitialInterval: time.Hour, MaxInterval: time.Minute}}}},
		{"multiplier below 1", Settings{Default: Schedule{Multiplier: 0.5}}},
		{"NaN multiplier", Settings{Default: Schedule{Multiplier: math.NaN()}}},
		{"infinite multiplier", Settings{Default: Schedule{Multiplier: math.Inf(1)}}},
		{"randomization above 1", Settings{Schedules: map[smtpcode.Category]Schedule{
			smtpcode.Greylist: {RandomizationFactor: 1.5}}}},
		{"NaN randomization", Settings{Default: Schedule{RandomizationFactor: math.NaN()}}},
		{"a century and more", Settings{MaxAge: 200 * 365 * 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(tt.s)
			require.ErrorIs(t, err, ErrInvalid)
			assert.Nil(t, p)
		})
	}
}

func TestScheduleExponentialBackOffMatchesPolicy(t *testing.T) {
	s := DefaultSchedule(smtpcode.System)
	s.RandomizationFactor = 0
	b := s.ExponentialBackOff(fixedClock(t0))
	assert.Zero(t, b.MaxElapsedTime, "the Policy's maximum age replaces MaxElapsedTime")
	var p Policy
	for attempt := 1; attempt <= 8; attempt++ {
		d, err := p.NextAttempt(transient(smtpcode.System), attempt, t0, t0, mid)
		require.NoError(t, err)
		assert.Equal(t, d.Interval, b.NextBackOff(), "attempt %d", attempt)
	}
	assert.NotNil(t, DefaultSchedule(smtpcode.Congestion).ExponentialBackOff(nil).Clock)
}

func TestPolicyRand(t *testing.T) {
	assert.Nil(t, (*Policy)(nil).Rand())
	assert.Nil(t, (&Policy{}).Rand())
	p, err := NewPolicy(Settings{Rand: mid})
	require.NoError(t, err)
	require.NotNil(t, p.Rand())
	assert.Equal(t, 0.5, p.Rand().Float64())
}

func TestPolicyConcurrentUse(t *testing.T) {
	p, err := NewPolicy(Settings{Rand: rand.New(rand.NewPCG(1, 1))})
	require.NoError(t, err)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 1; i <= 100; i++ {
				_, err := p.NextAttempt(transient(smtpcode.Congestion), i, t0, t0, p.Rand())
				assert.NoError(t, err)
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func TestDecisionString(t *testing.T) {
	var p Policy
	c := transient(smtpcode.Congestion)
	c.RetryAfter = 92 * time.Second
	d, err := p.NextAttempt(c, 1, t0, t0, low)
	require.NoError(t, err)
	assert.Equal(t, "retry in 1m32s at 2026-12-04T09:01:32Z (interval 30s, hint 1m32s)", d.String())
	d, err = p.NextAttempt(transient(smtpcode.System), 9, t0, t0.Add(DefaultMaxAge-time.Minute), mid)
	require.NoError(t, err)
	assert.Equal(t, "retry in 1m0s at 2026-12-09T09:00:00Z (interval 1h6m40s, last chance)", d.String())
	d, err = p.Postpone(3*time.Second, t0, t0)
	require.NoError(t, err)
	assert.Equal(t, "retry in 3s at 2026-12-04T09:00:03Z", d.String())
}

func TestIntervalsBeyondTheTable(t *testing.T) {
	// A multiplier so close to 1 that the precomputed table does not settle:
	// later attempts are stepped, with the same results as stepping
	// ExponentialBackOff by hand.
	slow := Schedule{InitialInterval: time.Minute, Multiplier: 1.01, MaxInterval: 10 * time.Hour, RandomizationFactor: -1}
	p, err := NewPolicy(Settings{Schedules: map[smtpcode.Category]Schedule{smtpcode.System: slow}})
	require.NoError(t, err)
	ref := p.Schedule(smtpcode.System).ExponentialBackOff(fixedClock(t0))
	for attempt := 1; attempt <= 3*tableSize; attempt++ {
		want := ref.NextBackOff()
		d, err := p.NextAttempt(transient(smtpcode.System), attempt, t0, t0, mid)
		require.NoError(t, err)
		require.Equal(t, want, d.Interval, "attempt %d", attempt)
		require.Equal(t, want, d.Delay, "no jitter")
	}
	d, err := p.NextAttempt(transient(smtpcode.System), math.MaxInt, t0, t0, mid)
	require.NoError(t, err)
	assert.Equal(t, 10*time.Hour, d.Interval, "1.01^100000 reaches any cap")
}
