package backoff

import (
	"errors"
	"time"

	cbackoff "github.com/cenkalti/backoff/v4"

	"github.com/sluicemail/sluice/smtpcode"
)

// BackOff adapts a Policy to cenkalti/backoff's BackOff interface, for code
// that already uses cbackoff.Retry or RetryNotify:
//
//	b := policy.BackOff(nil)
//	err := cbackoff.RetryNotify(b.Operation(send), b, notify)
//
// cbackoff.BackOff's NextBackOff is not told the error, so the adapter has
// to see it: wrap the operation with Operation (or report each error with
// Observe before NextBackOff is called). Operation turns a permanent failure,
// and a message past its maximum age, into cbackoff.Permanent(*GiveUpError):
// RetryNotify then stops at once and returns the *GiveUpError, which wraps
// the operation's error. NextBackOff returns cbackoff.Stop (-1) only when
// the policy gives up, never another negative duration; a failure it was not
// told about counts as a transient "other" failure.
//
// A *NotAttemptedError from the operation is a limiter wait: NextBackOff
// returns the wait and does not count an attempt.
//
// Like cenkalti's own BackOffs, a BackOff is not safe for concurrent use;
// make one per message or retry loop. Reset (which RetryNotify calls first)
// restarts the attempt count and the age of the message.
type BackOff struct {
	policy *Policy
	clock  cbackoff.Clock

	first    time.Time
	attempts int
	pending  *Decision // decided by Observe, returned by the next NextBackOff
	err      error     // *GiveUpError once the policy gave up
}

var _ cbackoff.BackOff = (*BackOff)(nil)

// BackOff returns an adapter driven by p and clock (nil means
// cbackoff.SystemClock, the wall clock). It is ready to use: Reset is done.
func (p *Policy) BackOff(clock cbackoff.Clock) *BackOff {
	if clock == nil {
		clock = cbackoff.SystemClock
	}
	b := &BackOff{policy: p, clock: clock}
	b.Reset()
	return b
}

// Reset restarts the attempt count and takes now as the first attempt.
func (b *BackOff) Reset() {
	b.first = b.clock.Now()
	b.attempts = 0
	b.pending = nil
	b.err = nil
}

// Observe reports the error of the operation that just ran, and returns
// the *GiveUpError when the policy gives up on it (nil otherwise). A nil
// err is ignored.
func (b *BackOff) Observe(err error) error {
	if err == nil {
		return nil
	}
	return b.observe(err, smtpcode.ClassifyError)
}

func (b *BackOff) observe(err error, classify func(error) smtpcode.Classification) error {
	now := b.clock.Now()
	var (
		d    Decision
		gerr error
		na   *NotAttemptedError
	)
	if errors.As(err, &na) {
		d, gerr = b.policy.Postpone(max(na.Wait, minLimiterWait), b.first, now)
		gerr = fillGiveUp(gerr, smtpcode.Classification{}, b.attempts, nil, err)
	} else {
		b.attempts++
		c := classify(err)
		d, gerr = b.policy.NextAttempt(c, b.attempts, b.first, now, b.policy.Rand())
		gerr = fillGiveUp(gerr, c, b.attempts, err, nil)
	}
	if gerr != nil {
		b.err, b.pending = gerr, nil
		return gerr
	}
	b.pending = &d
	return nil
}

// Operation wraps op so that every error it returns is observed, and a
// give-up stops cbackoff.Retry at once with the *GiveUpError.
func (b *BackOff) Operation(op cbackoff.Operation) cbackoff.Operation {
	return func() error {
		err := op()
		if gerr := b.Observe(err); gerr != nil {
			return cbackoff.Permanent(gerr)
		}
		return err
	}
}

// NextBackOff returns the wait decided for the last observed error, or
// cbackoff.Stop when the policy gave up.
func (b *BackOff) NextBackOff() time.Duration {
	if b.err != nil {
		return cbackoff.Stop
	}
	if b.pending == nil {
		// Not told about this failure: count it as a transient "other".
		if b.observe(errUnobserved, unobserved) != nil {
			return cbackoff.Stop
		}
	}
	d := b.pending.Delay
	b.pending = nil
	return d
}

// Err returns the *GiveUpError once the policy has given up, else nil.
func (b *BackOff) Err() error { return b.err }

// Attempts returns the failed attempts counted since Reset.
func (b *BackOff) Attempts() int { return b.attempts }

// errUnobserved stands for a failure NextBackOff was not told about.
var errUnobserved = errors.New("backoff: failure not observed by the adapter")

func unobserved(error) smtpcode.Classification {
	return smtpcode.Classification{Transient: true, Category: smtpcode.Other, Rule: "backoff-unobserved"}
}
