package backoff

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicemail/sluice/smtpcode"
)

// Why a Policy says not to retry. Both are only ever returned wrapped in a
// *GiveUpError; test with errors.Is.
var (
	// ErrPermanent: the reply was a permanent failure (not Transient).
	ErrPermanent = errors.New("backoff: permanent failure")
	// ErrMaxAge: the message has been retried for its maximum age, or the
	// next retry allowed would come after it.
	ErrMaxAge = errors.New("backoff: maximum age reached")
)

// ErrInvalid is wrapped by the errors for arguments or settings that make no
// sense (attempt 0, a zero first-attempt time, a negative interval). It never
// means "give up": a message that met it must stay queued while the caller's
// bug is fixed.
var ErrInvalid = errors.New("backoff: invalid argument")

// GiveUpError says that a message must not be retried, and why. It matches
// its Reason (ErrPermanent or ErrMaxAge) and the operation's last error with
// errors.Is and errors.As, so that errors.As(err, &smtpErr) still finds a
// go-smtp *smtp.SMTPError and smtpcode.FromError still finds the reply.
type GiveUpError struct {
	// Reason is ErrPermanent or ErrMaxAge.
	Reason error
	// Classification of the last failed attempt (zero when there was none,
	// e.g. a message that only ever waited for a limiter).
	Classification smtpcode.Classification
	// Attempts counts the failed delivery attempts when known: Retry and the
	// BackOff adapter count them; Policy.NextAttempt reports the number it
	// was given; Policy.Postpone is not told and reports 0.
	Attempts int
	// Age is the time from the first attempt to the decision.
	Age time.Duration
	// Err is the operation's last error (nil from Policy methods, which see
	// only classifications).
	Err error
}

func (e *GiveUpError) Error() string {
	why := "permanent failure"
	if errors.Is(e.Reason, ErrMaxAge) {
		why = "maximum age reached"
	}
	msg := fmt.Sprintf("backoff: giving up after %d attempts over %v: %s (category %v, rule %q)",
		e.Attempts, e.Age, why, e.Classification.Category, e.Classification.Rule)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the reason and the last error, for errors.Is and errors.As.
func (e *GiveUpError) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Reply returns the SMTP reply carried by the last error, if any.
func (e *GiveUpError) Reply() (smtpcode.Reply, bool) {
	if e.Err == nil {
		return smtpcode.Reply{}, false
	}
	return smtpcode.FromError(e.Err)
}

// NotAttemptedError is what an operation run by Retry or by the BackOff
// adapter returns when it did not try to deliver because a governor limit
// told it to wait: Retry waits Wait and runs it again without counting an
// attempt. Build it with NotAttempted.
type NotAttemptedError struct {
	// Wait is how long the limiter asked to wait; negative counts as 0.
	Wait time.Duration
	// Err is the limiter's reason (may be nil).
	Err error
}

// NotAttempted returns a *NotAttemptedError: "I did not try; a limiter says
// wait this long". It is not an attempt and never advances the attempt count.
func NotAttempted(wait time.Duration, reason error) error {
	return &NotAttemptedError{Wait: wait, Err: reason}
}

func (e *NotAttemptedError) Error() string {
	msg := fmt.Sprintf("backoff: not attempted: limiter wait %v", e.Wait)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *NotAttemptedError) Unwrap() error { return e.Err }
