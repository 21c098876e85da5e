package backoff

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicemail/sluice/smtpcode"
)

// Notify is called by RetryNotify before each wait, with the error that
// caused it, its classification (zero for a limiter wait) and the decision.
type Notify func(err error, c smtpcode.Classification, d Decision)

// Retry runs op until it succeeds, the policy gives up or ctx ends. It is
// for code that sends with its own net/smtp or go-smtp client.
//
// Each error op returns is classified with smtpcode.ClassifyError and counts
// as one attempt; a permanent one stops at once. An error that is (or wraps)
// a *NotAttemptedError (see NotAttempted) is a limiter wait, not an attempt:
// Retry waits for it (at least 1 ms) and runs op again with the attempt
// count unchanged.
// Waits use a timer and end early when ctx does. Retry uses the policy's
// Settings.Rand for jitter; p may be nil for the defaults.
//
// Retry returns nil on success. When the policy gives up it returns a
// *GiveUpError wrapping op's last error, so errors.As still finds the
// *smtp.SMTPError or *textproto.Error and smtpcode.FromError the last reply.
// When ctx ends it returns an error that wraps both ctx.Err() and op's last
// error, and is never a *GiveUpError: the message was not given up on.
func Retry(ctx context.Context, op func(ctx context.Context) error, p *Policy) error {
	return RetryNotify(ctx, op, p, nil)
}

// RetryNotify is Retry with a notify function (may be nil) called before
// each wait, for logs and metrics.
func RetryNotify(ctx context.Context, op func(ctx context.Context) error, p *Policy, notify Notify) error {
	if op == nil {
		return fmt.Errorf("%w: nil operation", ErrInvalid)
	}
	var (
		first    = time.Now()
		attempts int
		lastErr  error
		lastC    smtpcode.Classification
	)
	stopped := func(cause error) error {
		if lastErr == nil {
			return fmt.Errorf("backoff: stopped after %d attempts: %w", attempts, cause)
		}
		return fmt.Errorf("backoff: stopped after %d attempts: %w; last error: %w", attempts, cause, lastErr)
	}
	for {
		if err := ctx.Err(); err != nil {
			return stopped(err)
		}
		err := op(ctx)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			// op most likely failed because ctx ended; that says nothing
			// about the receiver, so it is neither an attempt nor a reply.
			if lastErr == nil || !isContextErr(err) {
				lastErr = err
			}
			return stopped(cerr)
		}
		now := time.Now()

		var d Decision
		var na *NotAttemptedError
		if errors.As(err, &na) {
			var gerr error
			d, gerr = p.Postpone(max(na.Wait, minLimiterWait), first, now)
			if gerr != nil {
				return fillGiveUp(gerr, lastC, attempts, lastErr, err)
			}
			if notify != nil {
				notify(err, smtpcode.Classification{}, d)
			}
		} else {
			attempts++
			lastErr = err
			lastC = smtpcode.ClassifyError(err)
			var gerr error
			d, gerr = p.NextAttempt(lastC, attempts, first, now, p.Rand())
			if gerr != nil {
				return fillGiveUp(gerr, lastC, attempts, lastErr, err)
			}
			if notify != nil {
				notify(err, lastC, d)
			}
		}
		if err := sleep(ctx, d.Delay); err != nil {
			return stopped(err)
		}
	}
}

// minLimiterWait keeps an operation whose limiter keeps answering "wait 0"
// from spinning Retry hot.
const minLimiterWait = time.Millisecond

// fillGiveUp completes a *GiveUpError from a Policy method with what only
// the retry loop knows; any other error is returned as is.
func fillGiveUp(err error, c smtpcode.Classification, attempts int, lastErr, err2 error) error {
	var g *GiveUpError
	if !errors.As(err, &g) {
		return err
	}
	g.Classification, g.Attempts = c, attempts
	g.Err = lastErr
	if g.Err == nil {
		g.Err = err2
	}
	return g
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// sleep waits d or until ctx ends, on a timer (fake time under synctest).
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
