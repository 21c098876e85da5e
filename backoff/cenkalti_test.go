package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	cbackoff "github.com/cenkalti/backoff/v4"
	smtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/smtpcode"
)

// opOf adapts a script to cenkalti's context-less Operation.
func opOf(s *script) cbackoff.Operation {
	return func() error { return s.op(context.Background()) }
}

func TestBackOffAdapterWithRetryNotify(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{Rand: seeded()})
		require.NoError(t, err)
		c := smtpcode.ClassifyError(errGmail445)
		ref, start := seeded(), time.Now()
		d1, err := p.NextAttempt(c, 1, start, start, ref)
		require.NoError(t, err)
		d2, err := p.NextAttempt(c, 2, start, d1.At, ref)
		require.NoError(t, err)

		s := &script{errs: []error{errGmail445, errGmail445}}
		b := p.BackOff(nil)
		var waits []time.Duration
		err = cbackoff.RetryNotify(b.Operation(opOf(s)), b, func(err error, d time.Duration) {
			assert.ErrorIs(t, err, errGmail445)
			waits = append(waits, d)
		})
		require.NoError(t, err)
		assert.Equal(t, []time.Duration{d1.Delay, d2.Delay}, waits)
		assert.Equal(t, waits, s.gaps(), "cenkalti waited exactly the policy's delays")
		assert.Equal(t, 2, b.Attempts())
		assert.NoError(t, b.Err())
	})
}

func TestBackOffAdapterPermanentStopsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{errs: []error{errUnknownUser, errGmail445}}
		b := (*Policy)(nil).BackOff(nil)
		notified := 0
		err := cbackoff.RetryNotify(b.Operation(opOf(s)), b, func(error, time.Duration) { notified++ })
		require.ErrorIs(t, err, ErrPermanent)
		var g *GiveUpError
		require.ErrorAs(t, err, &g, "RetryNotify unwraps cbackoff.Permanent down to our *GiveUpError")
		var se *smtp.SMTPError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 550, se.Code)
		assert.Len(t, s.calls, 1)
		assert.Zero(t, notified)
		assert.Equal(t, cbackoff.Stop, b.NextBackOff(), "Stop, and only Stop, once given up")
		assert.Equal(t, err, b.Err())
	})
}

func TestBackOffAdapterMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewPolicy(Settings{MaxAge: 2 * time.Minute})
		require.NoError(t, err)
		s := &script{errs: make([]error, 50)}
		for i := range s.errs {
			s.errs[i] = errGmail445
		}
		b := p.BackOff(nil)
		start := time.Now()
		err = cbackoff.Retry(b.Operation(opOf(s)), b)
		require.ErrorIs(t, err, ErrMaxAge)
		require.ErrorIs(t, err, errGmail445)
		// The last attempt comes at the maximum age, or earlier when the
		// reply's hint forbids any retry before it.
		assert.LessOrEqual(t, time.Since(start), 2*time.Minute)
		assert.Greater(t, b.Attempts(), 2)
		assert.Equal(t, len(s.calls), b.Attempts())
	})
}

func TestBackOffAdapterLimiterWaitIsNotAnAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		busy := errors.New("governor: slot busy")
		s := &script{errs: []error{NotAttempted(4*time.Second, busy), errGmail445, NotAttempted(-time.Second, busy)}}
		b := (*Policy)(nil).BackOff(nil)
		var waits []time.Duration
		err := cbackoff.RetryNotify(b.Operation(opOf(s)), b, func(_ error, d time.Duration) { waits = append(waits, d) })
		require.NoError(t, err)
		require.Len(t, waits, 3)
		assert.Equal(t, 4*time.Second, waits[0])
		assert.Equal(t, time.Millisecond, waits[2], "a negative limiter wait becomes the 1 ms minimum")
		assert.Equal(t, 1, b.Attempts(), "only the 421 counted")
	})
}

func TestBackOffAdapterUnobservedFailure(t *testing.T) {
	// NextBackOff called with no observed error: a transient "other", on
	// the adapter's clock.
	clock := fixedClock(t0)
	p, err := NewPolicy(Settings{Rand: mid})
	require.NoError(t, err)
	b := p.BackOff(clock)
	assert.Equal(t, 300*time.Second, b.NextBackOff())
	assert.Equal(t, 600*time.Second, b.NextBackOff())
	assert.Equal(t, 2, b.Attempts())
	b.Reset()
	assert.Zero(t, b.Attempts())
	assert.Equal(t, 300*time.Second, b.NextBackOff())
	assert.NoError(t, b.Observe(nil), "nil is not a failure")
	assert.Equal(t, 1, b.Attempts())
}

func TestBackOffAdapterObserveThenNext(t *testing.T) {
	p, err := NewPolicy(Settings{Rand: mid})
	require.NoError(t, err)
	b := p.BackOff(fixedClock(t0))
	require.NoError(t, b.Observe(errGmail445))
	want, err := p.NextAttempt(smtpcode.ClassifyError(errGmail445), 1, t0, t0, mid)
	require.NoError(t, err)
	assert.Equal(t, want.Delay, b.NextBackOff())

	gerr := b.Observe(errUnknownUser)
	require.ErrorIs(t, gerr, ErrPermanent)
	assert.Equal(t, cbackoff.Stop, b.NextBackOff())
	assert.Equal(t, cbackoff.Stop, b.NextBackOff(), "stays stopped until Reset")
	b.Reset()
	assert.NoError(t, b.Err())
	assert.Positive(t, b.NextBackOff())
}

func TestBackOffAdapterWithMaxRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{errs: []error{errGmail445, errGmail445, errGmail445}}
		b := (*Policy)(nil).BackOff(nil)
		err := cbackoff.Retry(b.Operation(opOf(s)), cbackoff.WithMaxRetries(b, 1))
		require.ErrorIs(t, err, errGmail445, "cenkalti's own Stop returns the raw last error")
		assert.Len(t, s.calls, 2)
	})
}
