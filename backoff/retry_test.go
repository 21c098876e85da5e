package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/textproto"
	"testing"
	"testing/synctest"
	"time"

	smtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/smtpcode"
)

// Replies as a go-smtp client returns them.
var (
	errGmail445 = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5},
		Message: "Server busy, try again later."} // https://support.google.com/a/answer/3726730
	errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "The email account that you tried to reach does not exist."}
)

// script is an operation that returns its errors in turn, then nil, and
// records when it was called (fake time under synctest).
type script struct {
	errs  []error
	calls []time.Time
}

func (s *script) op(ctx context.Context) error {
	s.calls = append(s.calls, time.Now())
	if len(s.calls) > len(s.errs) {
		return nil
	}
	return s.errs[len(s.calls)-1]
}

func (s *script) gaps() []time.Duration {
	var out []time.Duration
	for i := 1; i < len(s.calls); i++ {
		out = append(out, s.calls[i].Sub(s.calls[i-1]))
	}
	return out
}

func seeded() Rand { return rand.New(rand.NewPCG(2026, 12)) }

func TestRetryWaitsArePolicysInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{Rand: seeded()})
		require.NoError(t, err)

		// What the policy says, computed beside Retry from the same seed.
		c := smtpcode.ClassifyError(errGmail445)
		require.True(t, c.Transient)
		require.Equal(t, smtpcode.Congestion, c.Category)
		ref, start := seeded(), time.Now()
		d1, err := p.NextAttempt(c, 1, start, start, ref)
		require.NoError(t, err)
		d2, err := p.NextAttempt(c, 2, start, d1.At, ref)
		require.NoError(t, err)

		s := &script{errs: []error{errGmail445, errGmail445}}
		var notified []Decision
		err = RetryNotify(t.Context(), s.op, p, func(err error, got smtpcode.Classification, d Decision) {
			assert.ErrorIs(t, err, errGmail445)
			assert.Equal(t, c, got)
			notified = append(notified, d)
		})
		require.NoError(t, err)
		require.Len(t, s.calls, 3)
		assert.Equal(t, []time.Duration{d1.Delay, d2.Delay}, s.gaps(), "waits are exactly the policy's")
		assert.Equal(t, []Decision{d1, d2}, notified)
		assert.Equal(t, d1.Delay+d2.Delay, time.Since(start))
		if c.RetryAfter == 0 {
			// The defaults make these about 30 s and 1 min (±25%).
			assert.InDelta(t, 30*time.Second, d1.Delay, float64(7500*time.Millisecond))
			assert.InDelta(t, time.Minute, d2.Delay, float64(15*time.Second))
		}
	})
}

func TestRetryStopsOnPermanent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{errs: []error{errGmail445, errUnknownUser, errGmail445}}
		start := time.Now()
		err := Retry(t.Context(), s.op, &Policy{})
		require.ErrorIs(t, err, ErrPermanent)
		var g *GiveUpError
		require.ErrorAs(t, err, &g)
		assert.Equal(t, 2, g.Attempts)
		assert.False(t, g.Classification.Transient)
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se, "the last reply is still there")
		assert.Equal(t, 550, se.Code)
		r, ok := g.Reply()
		require.True(t, ok)
		assert.Equal(t, 550, r.Code)
		assert.Len(t, s.calls, 2)
		assert.Equal(t, s.calls[1], time.Now(), "no wait after a permanent failure")
		assert.Less(t, time.Since(start), time.Minute)
	})
}

func TestRetryGivesUpAtMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{MaxAge: 3 * time.Minute, Rand: seeded()})
		require.NoError(t, err)
		s := &script{errs: make([]error, 100)}
		for i := range s.errs {
			s.errs[i] = errGmail445
		}
		start := time.Now()
		err = Retry(t.Context(), s.op, p)
		require.ErrorIs(t, err, ErrMaxAge)
		require.ErrorIs(t, err, errGmail445)
		var g *GiveUpError
		require.ErrorAs(t, err, &g)
		assert.Equal(t, len(s.calls), g.Attempts)
		// The last attempt comes at the maximum age, or earlier when the
		// reply's hint (Gmail's rule suggests 30 s) forbids any retry before it.
		assert.LessOrEqual(t, time.Since(start), 3*time.Minute)
		assert.Equal(t, time.Since(start), g.Age)
		assert.Greater(t, g.Attempts, 3)
	})
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		s := &script{errs: []error{errGmail445, errGmail445}}
		start := time.Now()
		err := Retry(ctx, s.op, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, errGmail445, "the last reply is kept")
		var g *GiveUpError
		assert.False(t, errors.As(err, &g), "an ended context is not a give-up")
		assert.NotErrorIs(t, err, ErrPermanent)
		assert.Len(t, s.calls, 1)
		assert.Equal(t, 10*time.Second, time.Since(start), "the wait ends with the context")
	})
}

func TestRetryContextEndedBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s := &script{}
	err := Retry(ctx, s.op, nil)
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, s.calls)
}

func TestRetryOperationFailingBecauseContextEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		err := Retry(ctx, func(ctx context.Context) error {
			calls++
			if calls == 1 {
				return errGmail445
			}
			cancel()
			return ctx.Err()
		}, nil)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, errGmail445, "the last reply, not the context error, is kept")
		assert.Equal(t, 2, calls)
	})
}

func TestRetryLimiterWaitIsNotAnAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{Rand: seeded()})
		require.NoError(t, err)
		slotBusy := errors.New("governor: site concurrency 2/2")
		s := &script{errs: []error{
			NotAttempted(3*time.Second, slotBusy),
			NotAttempted(0, slotBusy), // "wait 0" is waited 1 ms, not spun
			errGmail445,
			NotAttempted(5*time.Second, slotBusy),
			errGmail445,
		}}
		c := smtpcode.ClassifyError(errGmail445)
		ref, start := seeded(), time.Now()
		d1, err := p.NextAttempt(c, 1, start, start.Add(3*time.Second+time.Millisecond), ref)
		require.NoError(t, err)
		d2, err := p.NextAttempt(c, 2, start, d1.At.Add(5*time.Second), ref)
		require.NoError(t, err)

		var classes []smtpcode.Classification
		err = RetryNotify(t.Context(), s.op, p, func(err error, c smtpcode.Classification, d Decision) {
			classes = append(classes, c)
		})
		require.NoError(t, err)
		assert.Equal(t, []time.Duration{3 * time.Second, time.Millisecond, d1.Delay, 5 * time.Second, d2.Delay}, s.gaps(),
			"the 421s are attempts 1 and 2, whatever the limiter waits between them")
		assert.Equal(t, []smtpcode.Classification{{}, {}, c, {}, c}, classes)
	})
}

func TestRetryLimiterWaitPastMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{MaxAge: time.Hour})
		require.NoError(t, err)
		quota := errors.New("governor: daily quota of mailbox a@example.com")
		s := &script{errs: []error{NotAttempted(2*time.Hour, quota)}}
		err = Retry(t.Context(), s.op, p)
		require.ErrorIs(t, err, ErrMaxAge)
		require.ErrorIs(t, err, quota)
		var g *GiveUpError
		require.ErrorAs(t, err, &g)
		assert.Zero(t, g.Attempts, "never attempted")
		var na *NotAttemptedError
		require.ErrorAs(t, err, &na)
		assert.Equal(t, 2*time.Hour, na.Wait)
	})
}

func TestRetryNetSMTPError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tp := &textproto.Error{Code: 450, Msg: "4.2.1 The user you are trying to contact is receiving mail too quickly"}
		s := &script{errs: []error{tp}}
		require.NoError(t, Retry(t.Context(), s.op, nil))
		assert.Len(t, s.calls, 2)
	})
}

func TestRetryNilOperation(t *testing.T) {
	err := Retry(t.Context(), nil, nil)
	assert.ErrorIs(t, err, ErrInvalid)
}
