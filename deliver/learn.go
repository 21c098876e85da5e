package deliver

import (
	"sync"
	"time"
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
	mu sync.Mutex
	m  map[poolKey]*learned
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
}

func (l *learner) get(k poolKey) *learned {
	if l.m == nil {
		l.m = make(map[poolKey]*learned)
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
	if e.live == 0 && e.dialing == 0 && (e.limit == 0 || !now.Before(e.until)) && (e.perConn == 0 || !now.Before(e.perConnUntil)) {
		delete(l.m, k)
	}
}

// reserve registers a dial for k, unless a learned limit forbids it.
func (l *learner) reserve(k poolKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	if e.limit > 0 && time.Now().Before(e.until) && e.live+e.dialing >= e.limit {
		l.forget(k, e)
		return false
	}
	e.dialing++
	return true
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

// closed records the end of a greeted session.
func (l *learner) closed(k poolKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(k)
	e.live--
	l.forget(k, e)
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
