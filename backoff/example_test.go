package backoff_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	cbackoff "github.com/cenkalti/backoff/v4"
	smtp "github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/backoff"
	"github.com/sluicemail/sluice/smtpcode"
)

// A queue that keeps its own messages asks the policy when to try again.
func ExamplePolicy_NextAttempt() {
	var p backoff.Policy // the zero Policy has the documented defaults
	rnd := rand.New(rand.NewPCG(1, 2))
	first := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

	// 421 4.4.5 from Gmail: congestion, about 30 s, doubling, jittered.
	congestion := smtpcode.Classification{Transient: true, Category: smtpcode.Congestion, Scope: smtpcode.ScopeConnection}
	now := first
	for attempt := 1; attempt <= 4; attempt++ {
		d, err := p.NextAttempt(congestion, attempt, first, now, rnd)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("attempt %d failed: interval %v, retry in %v\n", attempt, d.Interval, d.Delay.Round(time.Second))
		now = d.At
	}

	// "try again in 92 seconds": the hint is a lower bound.
	hinted := congestion
	hinted.RetryAfter = 92 * time.Second
	d, _ := p.NextAttempt(hinted, 1, first, first, rnd)
	fmt.Println("with a 92 s hint, retry in", d.Delay.Round(time.Second))

	// 550 5.1.1: permanent, never retried.
	unknownUser := smtpcode.Classification{Category: smtpcode.UnknownUser, Scope: smtpcode.ScopeRecipient}
	_, err := p.NextAttempt(unknownUser, 1, first, now, rnd)
	fmt.Println("unknown user, permanent:", errors.Is(err, backoff.ErrPermanent))

	// Five days after the first attempt, a transient failure is final too.
	_, err = p.NextAttempt(congestion, 40, first, first.Add(5*24*time.Hour), rnd)
	fmt.Println("after 5 days, max age:", errors.Is(err, backoff.ErrMaxAge))

	// Waiting for a governor limit is not an attempt: no attempt number.
	d, _ = p.Postpone(3*time.Second, first, now)
	fmt.Println("limiter wait:", d.Delay)

	// Output:
	// attempt 1 failed: interval 30s, retry in 33s
	// attempt 2 failed: interval 1m0s, retry in 59s
	// attempt 3 failed: interval 2m0s, retry in 2m1s
	// attempt 4 failed: interval 4m0s, retry in 3m52s
	// with a 92 s hint, retry in 1m50s
	// unknown user, permanent: true
	// after 5 days, max age: true
	// limiter wait: 3s
}

// fastPolicy retries after about a millisecond whatever the category or
// hint, so that the examples run at once.
func fastPolicy() *backoff.Policy {
	fast := backoff.Schedule{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond}
	s := backoff.Settings{
		Default:   fast,
		Schedules: map[smtpcode.Category]backoff.Schedule{},
		MaxHint:   time.Millisecond, // "try again later" rules suggest a minute or more
	}
	for c := smtpcode.Other; c <= smtpcode.Network; c++ {
		s.Schedules[c] = fast
	}
	p, err := backoff.NewPolicy(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Retry wraps a send made with one's own go-smtp or net/smtp client.
func ExampleRetry() {
	replies := []error{
		&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "Server busy, try again later."},
		&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "Server busy, try again later."},
	}
	attempts := 0
	send := func(ctx context.Context) error {
		attempts++
		if attempts <= len(replies) {
			return replies[attempts-1] // what smtp.Client.Mail/Rcpt/Data returned
		}
		return nil
	}
	err := backoff.Retry(context.Background(), send, fastPolicy())
	fmt.Printf("delivered after %d attempts: %v\n", attempts, err == nil)

	bounce := func(ctx context.Context) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	}
	err = backoff.Retry(context.Background(), bounce, fastPolicy())
	var giveUp *backoff.GiveUpError
	if errors.As(err, &giveUp) {
		r, _ := giveUp.Reply()
		fmt.Printf("gave up after %d attempt: permanent %v, last reply %d %v\n",
			giveUp.Attempts, errors.Is(err, backoff.ErrPermanent), r.Code, r.Enhanced)
	}
	// Output:
	// delivered after 3 attempts: true
	// gave up after 1 attempt: permanent true, last reply 550 5.1.1
}

// The adapter drives cenkalti/backoff's own retry loop.
func ExamplePolicy_BackOff() {
	calls := 0
	send := func() error {
		calls++
		if calls == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem"}
		}
		return nil
	}
	b := fastPolicy().BackOff(nil)
	err := cbackoff.RetryNotify(b.Operation(send), b, func(err error, d time.Duration) {
		fmt.Println("deferred:", err)
	})
	fmt.Println("sent:", err == nil, "attempts counted:", b.Attempts())
	// Output:
	// deferred: SMTP error 451: Temporary local problem
	// sent: true attempts counted: 1
}

// A limiter wait inside the operation is reported with NotAttempted.
func ExampleNotAttempted() {
	slots := 0
	send := func(ctx context.Context) error {
		if slots == 0 { // e.g. governor: the site's two connections are busy
			slots++
			return backoff.NotAttempted(2*time.Millisecond, errors.New("site concurrency 2/2"))
		}
		return nil
	}
	err := backoff.RetryNotify(context.Background(), send, fastPolicy(),
		func(err error, c smtpcode.Classification, d backoff.Decision) {
			var na *backoff.NotAttemptedError
			fmt.Println("not an attempt:", errors.As(err, &na), "wait:", d.Delay)
		})
	fmt.Println("sent:", err == nil)
	// Output:
	// not an attempt: true wait: 2ms
	// sent: true
}
