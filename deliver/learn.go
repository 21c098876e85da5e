package deliver

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultLearnFor is how long a concurrency learned from a receiver's
// congestion refusal stays in force (the governor's ProbeAfter default).
const DefaultLearnFor = 10 * time.Minute

// learner remembers, per source IP and site, how many connections the
// receiver was seen to accept when it refused one with a congestion reply
// (421 4.4.5). deliver knows this exactly (its greeted sessions), where the
// governor only sees the slots held, which include connections still being
// dialled. Until the learned limit expires, no connection is dialled while
// that many are open, so a receiver capped at N never sees N+1 again
// after its first refusal; the governor's AIMD goes on underneath.
type learner struct {
	mu    sync.Mutex
	m     map[poolKey]*learned
	calls int // for the periodic sweep of stale entries
}

type learned struct {
	live    int       // greeted sessions open
	dialing int       // dials in progress
	limit   int       // 0: none
	until   time.Time // limit expiry
	// perConn is the receiver's messages-per-connection cap, learned from
	// its 421 at MAIL; 0: none known. It expires with perConnUntil.
	perConn      int
	perConnUntil time.Time

	closing []time.Time // grace ends of connections just closed (closeGrace)

	// Rate learning: recent delivery times, and the learned limit.
	sent      [rateSamples]time.Time
	nsent     int
	rl        *rate.Limiter
	rlUntil   time.Time
	rlCeiling rate.Limit
	lastCut   time.Time
}

func (l *learner) get(k poolKey) *learned {
	if l.m == nil {
		l.m = make(map[poolKey]*learned)
	}
	// Memory follows active sites: now and then, drop what is stale.
	if l.calls++; l.calls%1024 == 0 && len(l.m) > 64 {
		for k2, e := range l.m {
			l.forget(k2, e)
		}
	}
	e := l.m[k]
	if e == nil {
		e = &learned{}
		l.m[k] = e
	}
	return e
}

func (l *learner) forget(k poolKey, e *learned) {
	now := time.Now()
	if e.live == 0 && e.dialing == 0 && len(e.closing) == 0 && (e.limit == 0 || !now.Before(e.until)) &&
		(e.perConn == 0 || !now.Before(e.perConnUntil)) && (e.rl == nil || !now.Before(e.rlUntil)) &&
		(e.nsent == 0 || now.Sub(e.sent[(e.nsent-1)%rateSamples]) > time.Minute) {
		delete(l.m, k)
	}
}

// reserve registers a dial for k, unless a learned limit forbids it; then
// it returns when a grace period ends (zero: when a connection closes).
// deliver reserves only once it holds the governor's slot: a reservation
// taken before a wait in the governor would let the dial go ahead after a
// limit learned during that wait.
func (l *learner) reserve(k poolKey) (bool, time.Time) {
	return l.check(k, true)
}

// full reports whether a learned limit forbids a dial for k now, as
// reserve, without reserving: a cheap test before waiting for a slot.
func (l *learner) full(k poolKey) (bool, time.Time) {
	ok, next := l.check(k, false)
	return !ok, next
}

func (l *learner) check(k poolKey, reserve bool) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	now := time.Now()
	closing, next := e.closingCount(now)
	if e.limit > 0 && now.Before(e.until) && e.live+e.dialing+closing >= e.limit {
		l.forget(k, e)
		return false, next
	}
	if !reserve {
		l.forget(k, e)
		return true, time.Time{}
	}
	e.dialing++
	return true, time.Time{}
}

// dialed ends a reserved dial: ok when the session is up; congested when
// the receiver refused it for too many connections.
func (l *learner) dialed(k poolKey, ok, congested bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	e.dialing--
	now := time.Now()
	active := e.limit > 0 && now.Before(e.until)
	switch {
	case ok:
		e.live++
		if active && e.live > e.limit {
			e.limit = e.live // the receiver accepts at least this many
		}
	case congested:
		seen := max(e.live, 1)
		if !active || seen < e.limit {
			e.limit = seen
		}
		e.until = now.Add(DefaultLearnFor)
	}
	l.forget(k, e)
}

// closeGrace is how long a connection closed after QUIT still counts as
// open toward a learned limit: the receiver closed its side, but may not
// have done its bookkeeping yet, and a replacement dialled at once would be
// refused as one too many (and teach a limit one too low).
const closeGrace = 50 * time.Millisecond

// closed records the end of a greeted session; graceful when the
// receiver closed its side after QUIT.
func (l *learner) closed(k poolKey, graceful bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	e.live--
	if graceful && e.limit > 0 {
		e.closing = append(e.closing, time.Now().Add(closeGrace))
	}
	l.forget(k, e)
}

// closingCount drops expired grace entries and returns the others, and
// the earliest expiry.
func (e *learned) closingCount(now time.Time) (int, time.Time) {
	kept := e.closing[:0]
	var first time.Time
	for _, t := range e.closing {
		if now.Before(t) {
			kept = append(kept, t)
			if first.IsZero() || t.Before(first) {
				first = t
			}
		}
	}
	e.closing = kept
	return len(kept), first
}

// live returns the greeted sessions open for k.
func (l *learner) live(k poolKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[k]; e != nil {
		return e.live
	}
	return 0
}

// perConnCap records that the receiver refused a message after n on one
// connection.
func (l *learner) perConnCap(k poolKey, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	now := time.Now()
	if e.perConn == 0 || !now.Before(e.perConnUntil) || n < e.perConn {
		e.perConn = max(n, 1)
	}
	e.perConnUntil = now.Add(DefaultLearnFor)
}

// perConn returns the learned messages-per-connection cap of k, 0 if none.
func (l *learner) perConn(k poolKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[k]; e != nil && e.perConn > 0 && time.Now().Before(e.perConnUntil) {
		return e.perConn
	}
	return 0
}

// Rate learning. A receiver's rate-limit reply (421 4.7.28, Yahoo's
// [TSS04], Microsoft's 4.7.650) says "slower", not how slow. deliver
// measures the rate it was delivering at to that source IP and site, and
// halves it (as TCP halves its window); each delivery then raises the rate
// by 0.5%, up to 90% of the rate that was refused (so an over-cut, as
// after Yahoo's penalty period that keeps refusing once tripped, recovers).
// A refusal cuts again only for work started after the last cut. A learned
// rate lapses DefaultLearnFor after the last cut.
const (
	rateSamples = 32
	minLearned  = rate.Limit(1.0 / 20) // never slower than one message per 20 s
	rateGrowth  = 1.005
	rateCeiling = 0.9
)

// delivered records a delivery to k.
func (l *learner) delivered(k poolKey, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	e.sent[e.nsent%rateSamples] = now
	e.nsent++
	if e.rl != nil && now.Before(e.rlUntil) {
		if r := min(e.rl.Limit()*rateGrowth, e.rlCeiling); r > e.rl.Limit() {
			e.rl.SetLimitAt(now, r)
		}
	}
}

// measured returns the delivery rate of the recent samples, 0 if unknown.
func (e *learned) measured(now time.Time) rate.Limit {
	n := min(e.nsent, rateSamples)
	if n < 2 {
		return 0
	}
	newest := e.sent[(e.nsent-1)%rateSamples]
	oldest := e.sent[(e.nsent-n)%rateSamples]
	if span := newest.Sub(oldest); span > 0 && now.Sub(newest) < time.Minute {
		return rate.Limit(float64(n-1) / span.Seconds())
	}
	return 0
}

// rateLimited halves the rate to k after a rate-limit reply to work that
// started at started.
func (l *learner) rateLimited(k poolKey, started time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	now := time.Now()
	active := e.rl != nil && now.Before(e.rlUntil)
	if active && !started.After(e.lastCut) {
		return // same failure run: already cut
	}
	var refused rate.Limit
	switch {
	case active:
		refused = e.rl.Limit()
	case e.measured(now) > 0:
		refused = e.measured(now)
	default:
		refused = 2 // refused before any measure: one a second, then halving
	}
	r := max(refused/2, minLearned)
	e.rlCeiling = max(refused*rateCeiling, r)
	if e.rl == nil {
		e.rl = rate.NewLimiter(r, 1)
	} else {
		e.rl.SetLimitAt(now, r)
	}
	e.lastCut = now
	e.rlUntil = now.Add(DefaultLearnFor)
}

// rateLimiter returns the learned limiter of k, nil when none is in force.
func (l *learner) rateLimiter(k poolKey) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[k]; e != nil && e.rl != nil && time.Now().Before(e.rlUntil) {
		return e.rl
	}
	return nil
}
