package backoff

import (
	"errors"
	"testing"
	"time"

	"github.com/sluicemail/sluice/smtpcode"
)

// FuzzNextAttempt checks the invariants of every decision: no panic; a
// retry is never before now, never after the maximum age, never before a
// (capped) hint; bad input is ErrInvalid and never a give-up.
func FuzzNextAttempt(f *testing.F) {
	f.Add(true, uint8(smtpcode.Congestion), 1, int64(0), int64(0), 0.5, int64(0))
	f.Add(true, uint8(smtpcode.Greylist), 3, int64(time.Hour), int64(0), 0.0, int64(92*time.Second))
	f.Add(true, uint8(smtpcode.System), 1<<40, int64(5*24*time.Hour-time.Second), int64(0), 0.99, int64(time.Hour))
	f.Add(false, uint8(smtpcode.UnknownUser), 1, int64(0), int64(0), 0.5, int64(0))
	f.Add(true, uint8(250), 0, int64(-time.Hour), int64(-1), 7.0, int64(-5))
	f.Fuzz(func(t *testing.T, transient bool, cat uint8, attempt int, age, firstOffset int64, u float64, hint int64) {
		var p Policy
		first := t0.Add(time.Duration(firstOffset))
		now := first.Add(time.Duration(age))
		c := smtpcode.Classification{Transient: transient, Category: smtpcode.Category(cat), RetryAfter: time.Duration(hint)}
		d, err := p.NextAttempt(c, attempt, first, now, fixedRand(u))
		var g *GiveUpError
		switch {
		case attempt < 1:
			if !errors.Is(err, ErrInvalid) || errors.As(err, &g) {
				t.Fatalf("attempt %d: got %v, want ErrInvalid only", attempt, err)
			}
		case err != nil:
			if !errors.As(err, &g) || !(errors.Is(err, ErrPermanent) || errors.Is(err, ErrMaxAge)) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, ErrPermanent) != !transient {
				t.Fatalf("permanent %v for transient %v", err, transient)
			}
		default:
			if !transient {
				t.Fatal("a permanent failure was retried")
			}
			if d.Delay < 0 || !d.At.Equal(now.Add(d.Delay)) {
				t.Fatalf("bad decision %+v at now %v", d, now)
			}
			if d.At.After(first.Add(DefaultMaxAge)) {
				t.Fatalf("retry at %v after the maximum age", d.At)
			}
			if h := min(time.Duration(hint), DefaultMaxHint); d.Delay < h {
				t.Fatalf("delay %v below hint %v", d.Delay, h)
			}
		}
	})
}
