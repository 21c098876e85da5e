package governor_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicemail/sluice/governor"
	"golang.org/x/time/rate"
)

// One key: at most 2 connections to Gmail from one source IP.
func Example() {
	g, err := governor.New(governor.Config{Policy: &governor.Policy{
		Patterns: []governor.Pattern{{Match: "*|site:google.com", Limits: governor.Limits{MaxConcurrency: 2}}},
	}})
	if err != nil {
		panic(err)
	}
	const key = "ip:203.0.113.7|site:google.com"
	a, _ := g.Acquire(context.Background(), key)
	b, _ := g.Acquire(context.Background(), key)
	_, d, _ := g.TryAcquire(key)
	fmt.Println(d)
	a.Release()
	c, d, _ := g.TryAcquire(key)
	fmt.Println(d.OK)
	b.Release()
	c.Release()
	// Output:
	// not granted (concurrency of ip:203.0.113.7|site:google.com)
	// true
}

// Several keys at once: a connection holds a slot on the source IP, the
// site and the pair, all or nothing.
func ExampleGovernor_Acquire() {
	g, _ := governor.New(governor.Config{Policy: &governor.Policy{
		Keys: map[string]governor.Limits{"site:google.com": {MaxConcurrency: 1}},
		Patterns: []governor.Pattern{
			{Match: "ip:*", Limits: governor.Limits{MaxConcurrency: 10}},
		},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	keys := []string{"ip:203.0.113.7", "site:google.com", "ip:203.0.113.7|site:google.com"}
	p, err := g.Acquire(ctx, keys...)
	if err != nil {
		panic(err)
	}
	// Another IP to the same site waits for site:google.com; nothing on its
	// own IP is held meanwhile.
	_, d, _ := g.TryAcquire("ip:198.51.100.1", "site:google.com", "ip:198.51.100.1|site:google.com")
	fmt.Println(d.Key, d.Limit)
	p.Release()
	states, _ := g.Snapshot()
	for _, s := range states {
		fmt.Println(s.Key, s.InFlight)
	}
	// Output:
	// site:google.com concurrency
	// ip:198.51.100.1 0
	// ip:198.51.100.1|site:google.com 0
	// ip:203.0.113.7 0
	// ip:203.0.113.7|site:google.com 0
	// site:google.com 0
}

// A cold-email mailbox sends at most 2 messages a day (New York days),
// spread by up to 20 minutes of jitter.
func ExampleQuota() {
	ny, _ := time.LoadLocation("America/New_York")
	g, _ := governor.New(governor.Config{Policy: &governor.Policy{
		Patterns: []governor.Pattern{{Match: "mailbox:*", Limits: governor.Limits{
			Quota:  governor.PerDay(2, ny),
			Jitter: 20 * time.Minute,
		}}},
	}})
	const mailbox = "mailbox:alice@example.org"
	for i := range 3 {
		d, _ := g.TryTake(mailbox)
		if d.OK {
			fmt.Println("message", i+1, "may go")
			continue
		}
		_, end := governor.PerDay(2, ny).Period(time.Now())
		fmt.Println("message", i+1, "waits for", d.Limit, "until next day:", d.RetryAt.Equal(end))
	}
	// Output:
	// message 1 may go
	// message 2 may go
	// message 3 waits for quota until next day: true
}

// A mailbox sends at most 500 messages a day. A message takes one unit when
// it starts; when it then goes to no recipient at all (every one deferred),
// its unit is given back, so that its retries do not spend the quota again.
func ExampleGovernor_TakeReservation() {
	g, _ := governor.New(governor.Config{Policy: &governor.Policy{
		Patterns: []governor.Pattern{{Match: "mailbox:*", Limits: governor.Limits{
			Quota: governor.PerDay(500, time.UTC),
		}}},
	}})
	const mailbox = "mailbox:alice@example.org"
	send := func(deliverable bool) {
		r, err := g.TakeReservation(context.Background(), mailbox)
		if err != nil {
			return // a *WaitError: defer the message
		}
		if !deliverable { // every recipient deferred: nothing was sent
			_ = r.Cancel()
		}
	}
	used := func() int { s, _ := g.Snapshot(); return s[0].QuotaUsed }
	send(true)
	fmt.Println("sent:", used(), "of 500 used")
	send(false)
	fmt.Println("deferred:", used(), "of 500 used")
	// Output:
	// sent: 1 of 500 used
	// deferred: 1 of 500 used
}

// Adaptive feedback: a 421 4.4.5 halves the key's concurrency and holds it
// at what the receiver accepted; successes grow it back.
func ExampleGovernor_Feedback() {
	g, _ := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{
		MaxConcurrency: 10,
		Rate:           rate.Every(100 * time.Millisecond),
		Adaptive:       governor.Adaptive{InitialConcurrency: governor.PostfixInitialConcurrency},
	}}})
	const key = "ip:203.0.113.7|site:google.com"
	conc := func() int { s, _ := g.Snapshot(); return s[0].Concurrency }
	var ps []governor.Permit
	for range 5 {
		p, _ := g.Acquire(context.Background(), key)
		ps = append(ps, p)
	}
	fmt.Println("start:", conc())
	// The receiver refused the fifth connection: report before releasing it.
	_ = g.Feedback(key, governor.Signal{Kind: governor.Congestion, Started: ps[4].Acquired(), Reason: "421 4.4.5 Try again later"})
	fmt.Println("after 421 4.4.5:", conc())
	for _, p := range ps {
		_ = g.Feedback(key, governor.Signal{Kind: governor.Success, Started: p.Acquired()})
		p.Release()
	}
	fmt.Println("after successes:", conc(), "(held at what the receiver accepted)")
	_ = g.Feedback(key, governor.Signal{Kind: governor.RateLimited, Reason: "421 4.7.28"})
	s, _ := g.Snapshot()
	fmt.Println("rate after 421 4.7.28:", s[0].Rate, "per second")
	// Output:
	// start: 5
	// after 421 4.4.5: 2
	// after successes: 4 (held at what the receiver accepted)
	// rate after 421 4.7.28: 5 per second
}
