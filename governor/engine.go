package governor

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"
)

// The in-memory state. Keys are spread over shards; each shard has one mutex
// guarding its map and every entry in it. A request over several keys locks
// the shards of its keys in ascending shard order, so two requests never
// deadlock, evaluates every key, and commits all or nothing.

const nShards = 128

// maxFreePermits bounds each shard's list of reusable permit states.
const maxFreePermits = 64

const unknown = int64(-1) // a RetryAt that depends on others releasing

type engine struct {
	epoch  time.Time
	idle   int64 // <0: never evict
	seed   maphash.Seed
	shards [nShards]shard
}

type shard struct {
	mu        sync.Mutex
	index     int
	free      *permitState // released one-key permit states, for reuse under mu
	nfree     int
	m         map[string]*entry
	peak      int
	nextSweep int64
	_         [16]byte // keep hot shards on separate cache lines
}

// entry is one key's state. Times are ticks: nanoseconds since engine.epoch,
// read from the monotonic clock. What only some keys need (adaptation,
// quota, window, suspension) lives in *entryExt, shared read-only as
// zeroExt until the key first needs its own (own), so that a key with
// only slots and rates stays small.
type entry struct {
	key   string
	shard *shard          // the shard holding it
	pol   *compiledPolicy // policy the cached lim came from
	lim   *climits
	*entryExt

	q        []*waiter // FIFO of waiters blocked on this key; q[0] is the head
	eff      float64   // adapted concurrency
	tat      int64     // GCRA theoretical arrival time: events
	ctat     int64     // and connections
	lastUsed int64
	held     int32 // slots held
	si       uint8 // index of shard
	adapted  bool  // eff moved by feedback
	touched  bool  // released since lastUsed
}

type entryExt struct {
	capAt        float64 // growth stops here until capUntil
	capUntil     int64
	lastDecrease int64
	failures     int

	rateMul     float64 // rate multiplier while rateUntil is ahead
	rateUntil   int64
	lastRateCut int64

	qCount int     // calendar quota: events in the period ending at qEnd
	qEnd   int64   //
	qFrom  int64   // when qCount last restarted from 0: units committed before are not in it
	qStale bool    // the calendar changed: recompute qEnd, keep the count
	qTimes []int64 // rolling quota: grant times within the window

	winFrom, winTo int64 // cached open interval of the send window; winTo 0: none

	suspUntil  int64
	suspReason string
	reason     string // last reason (Snapshot)
}

// zeroExt is the extension of every key that has not needed its own. It is
// never written: write only after own().
var zeroExt = entryExt{lastDecrease: math.MinInt64, lastRateCut: math.MinInt64}

// own gives e its own extension before a write to one of its fields.
func (e *entry) own() {
	if e.entryExt == &zeroExt {
		x := zeroExt
		e.entryExt = &x
	}
}

// waiter is a blocked request. ch has room for one wake-up.
type waiter struct {
	ch     chan struct{}
	on     *entry // the entry whose queue holds it, or nil
	ticket string
}

func newEngine(epoch time.Time, idle time.Duration) *engine {
	e := &engine{epoch: epoch, idle: int64(idle), seed: maphash.MakeSeed()}
	for i := range e.shards {
		e.shards[i].m = make(map[string]*entry)
		e.shards[i].index = i
	}
	return e
}

func (en *engine) tick(now time.Time) int64 { return int64(now.Sub(en.epoch)) }

// clock is the one place the in-memory governor reads time: the monotonic
// time since the epoch (one clock read, cheaper than time.Now, and faked by
// testing/synctest like time.Now), and the wall time derived from it.
func (en *engine) clock() (time.Time, int64) {
	t := en.tick1()
	return en.epoch.Add(time.Duration(t)), t
}

// tick1 is clock without the wall time.
func (en *engine) tick1() int64 { return int64(time.Since(en.epoch)) }

func (en *engine) wall(t int64) time.Time { return en.epoch.Add(time.Duration(t)) }

func (en *engine) shardOf(key string) int {
	return int(maphash.String(en.seed, key) % nShards)
}

// get returns key's entry in the locked shard s, creating it.
func (en *engine) get(s *shard, key string, cp *compiledPolicy, t int64) *entry {
	if e := s.m[key]; e != nil {
		return e
	}
	if en.idle >= 0 && t >= s.nextSweep {
		en.sweep(s, t)
	}
	e := &entry{key: key, shard: s, si: uint8(s.index), entryExt: &zeroExt, lastUsed: t}
	if cp != nil {
		e.pol = cp
		e.setLim(cp.lookup(key))
	}
	s.m[key] = e
	if len(s.m) > s.peak {
		s.peak = len(s.m)
	}
	return e
}

// limits returns the entry's limits under policy cp, carrying state over
// when the policy changed.
func (e *entry) limits(cp *compiledPolicy) *climits {
	if cp == nil || e.pol == cp {
		return e.lim
	}
	e.pol = cp
	e.setLim(cp.lookup(e.key))
	return e.lim
}

// setLim switches e to new limits, keeping its state.
func (e *entry) setLim(nl *climits) {
	if nl == e.lim {
		return
	}
	if e.lim == nil {
		e.lim, e.eff = nl, nl.initial
		return
	}
	if !e.adapted {
		e.eff = nl.initial
	}
	if e.entryExt == &zeroExt { // nothing cached to invalidate
		e.lim = nl
		return
	}
	if nl.qcal != e.lim.qcal || nl.raw.Quota.Location != e.lim.raw.Quota.Location {
		e.qStale = true
	}
	if nl.raw.Window.Start != e.lim.raw.Window.Start || nl.raw.Window.End != e.lim.raw.Window.End ||
		nl.raw.Window.Location != e.lim.raw.Window.Location || len(nl.raw.Window.Days) != 0 || len(e.lim.raw.Window.Days) != 0 {
		e.winTo = 0
	}
	e.lim = nl
}

// slots is the effective concurrency; 0: unlimited.
func (e *entry) slots() int {
	m := e.lim.maxConc
	if m == 0 {
		return 0
	}
	s := int(e.eff)
	if s > m {
		s = m
	}
	if s < 1 {
		s = 1
	}
	return s
}

// ivl returns an emission interval with a RateLimited penalty applied.
func (e *entry) ivl(base int64, t int64) int64 {
	if base == 0 || e.rateUntil <= t {
		return base
	}
	v := float64(base) / e.rateMul
	if v > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(v)
}

// ready is when the next token of a GCRA bucket is available.
func ready(tat, t, iv, burst int64) int64 {
	if tat < t {
		tat = t
	}
	r := tat + iv - iv*burst
	if r < t {
		return t
	}
	return r
}

// windowAt reports whether the send window is open at t, else when it opens
// next (unknown if never).
func (e *entry) windowAt(en *engine, now time.Time, t int64) (bool, int64) {
	e.own()
	if e.winTo == 0 || t >= e.winTo {
		from, to := e.lim.raw.Window.interval(now)
		if from.IsZero() {
			e.winTo = 0
			return false, unknown
		}
		e.winFrom, e.winTo = en.tick(from), en.tick(to)
	}
	if t >= e.winFrom {
		return true, 0
	}
	return false, e.winFrom
}

// quotaFull reports whether the quota is used up at t, and when a unit frees.
func (e *entry) quotaFull(en *engine, now time.Time, t int64) (bool, int64) {
	e.own()
	l := e.lim
	if l.qcal != Rolling {
		if t >= e.qEnd || e.qStale {
			if t >= e.qEnd {
				e.qCount, e.qFrom = 0, t
			}
			_, end := l.raw.Quota.Period(now)
			e.qEnd = max(en.tick(end), t+1) // a period always ends after now
			e.qStale = false
		}
		if e.qCount >= l.qmax {
			return true, e.qEnd
		}
		return false, 0
	}
	e.dropExpired(t)
	if len(e.qTimes) >= l.qmax {
		return true, e.qTimes[len(e.qTimes)-l.qmax] + l.qwin
	}
	return false, 0
}

func (e *entry) dropExpired(t int64) {
	if len(e.qTimes) == 0 {
		return
	}
	n := 0
	for n < len(e.qTimes) && e.qTimes[n] <= t-e.lim.qwin {
		n++
	}
	if n == len(e.qTimes) {
		e.qTimes = nil
	} else if n > 0 {
		e.qTimes = e.qTimes[n:]
	}
}

// verdict is the evaluation of a request.
type verdict struct {
	ok     bool
	start  int64
	idx    int // entry that held it up the longest, or -1
	limit  LimitKind
	retry  int64 // unknown (-1) or a tick
	reason string
}

func (v *verdict) consider(i int, k LimitKind, at int64, reason string) {
	if v.idx >= 0 && (v.retry == unknown || (at != unknown && at <= v.retry)) {
		return
	}
	v.idx, v.limit, v.retry, v.reason = i, k, at, reason
}

// eval decides a request over locked entries at t. w is the caller's waiter
// (it may be the head of queues) or nil. deadline is the latest start tick.
func (en *engine) eval(ents []*entry, kind Kind, now time.Time, t int64, w *waiter, cp *compiledPolicy, try bool, deadline int64) verdict {
	v := verdict{idx: -1, start: t}
	rs, ri, rk := t, -1, LimitNone
	for i, e := range ents {
		lim := e.limits(cp)
		if e.suspUntil > t {
			v.consider(i, LimitSuspended, e.suspUntil, e.suspReason)
		}
		if lim.winOn {
			if open, next := e.windowAt(en, now, t); !open {
				v.consider(i, LimitWindow, next, "")
			}
		}
		if len(e.q) > 0 && e.q[0] != w {
			v.consider(i, LimitQueue, unknown, "")
		}
		if kind == KindSlot {
			if s := e.slots(); s > 0 && int(e.held) >= s {
				v.consider(i, LimitConcurrency, unknown, "")
			}
			if lim.civl > 0 {
				if r := ready(e.ctat, t, e.ivl(lim.civl, t), burstOf(lim.raw.ConnectionBurst)); r > rs {
					rs, ri, rk = r, i, LimitConnectionRate
				}
			}
		} else {
			if lim.qmax > 0 {
				if full, at := e.quotaFull(en, now, t); full {
					v.consider(i, LimitQuota, at, "")
				}
			}
			if lim.ival > 0 {
				if r := ready(e.tat, t, e.ivl(lim.ival, t), burstOf(lim.raw.Burst)); r > rs {
					rs, ri, rk = r, i, LimitRate
				}
			}
		}
	}
	if v.idx >= 0 {
		return v
	}
	if ri >= 0 && (try || rs > deadline) {
		v.idx, v.limit, v.retry = ri, rk, rs
		return v
	}
	v.ok, v.start = true, rs
	if ri >= 0 {
		v.idx, v.limit = ri, rk
	}
	return v
}

// commit takes what the request asks on every entry; w leaves its queue.
func (en *engine) commit(ents []*entry, kind Kind, t, start int64, w *waiter) {
	for _, e := range ents {
		l := e.lim
		if kind == KindSlot {
			e.held++
			if l.civl > 0 {
				e.ctat = max(e.ctat, t) + e.ivl(l.civl, t)
			}
		} else {
			if l.ival > 0 {
				e.tat = max(e.tat, t) + e.ivl(l.ival, t)
			}
			if l.qmax > 0 {
				e.own()
				if l.qcal != Rolling {
					e.qCount++
				} else {
					i := len(e.qTimes)
					for i > 0 && e.qTimes[i-1] > start {
						i--
					}
					e.qTimes = slices.Insert(e.qTimes, i, start)
				}
			}
		}
		e.lastUsed = t
	}
	if w != nil && w.on != nil {
		w.on.dequeue(w)
	}
}

// undo gives back what commit took at tick tc for a start at ts; now is t.
// Tokens come back (the arrival time moves back one interval, not before t);
// a rolling-quota unit stamped at ts is removed; a calendar-quota unit only
// if the count it went into (committed at tc) is still the current one at t,
// never into the count of a later period.
func (en *engine) undo(ents []*entry, kind Kind, tc, ts, t int64) {
	for _, e := range ents {
		l := e.lim
		if kind == KindSlot {
			if e.held > 0 {
				e.held--
			}
			if l.civl > 0 && e.ctat > t {
				e.ctat = max(e.ctat-e.ivl(l.civl, t), t)
			}
		} else {
			if l.ival > 0 && e.tat > t {
				e.tat = max(e.tat-e.ivl(l.ival, t), t)
			}
			if l.qmax > 0 {
				e.own()
				if l.qcal != Rolling {
					if t < e.qEnd && tc >= e.qFrom && e.qCount > 0 {
						e.qCount--
					}
				} else {
					for i := len(e.qTimes) - 1; i >= 0; i-- {
						if e.qTimes[i] == ts {
							e.qTimes = append(e.qTimes[:i], e.qTimes[i+1:]...)
							break
						}
					}
				}
			}
		}
		e.lastUsed = t
		e.wake()
	}
}

// release frees one slot on every entry.
// It reads no clock: the entry is marked touched instead, and the sweep
// that finds it so restarts its idle time (see sweep).
func (en *engine) release(ents []*entry) {
	for _, e := range ents {
		e.release()
	}
}

func (e *entry) release() {
	if e.held > 0 {
		e.held--
	}
	e.touched = true
	e.wake()
}

// wake tells the head waiter to look again.
func (e *entry) wake() {
	if len(e.q) > 0 {
		select {
		case e.q[0].ch <- struct{}{}:
		default:
		}
	}
}

// enqueue puts w at the tail of e's queue, leaving any other queue.
func (e *entry) enqueue(w *waiter) {
	if w.on == e {
		return
	}
	if w.on != nil {
		w.on.dequeue(w)
	}
	e.q = append(e.q, w)
	w.on = e
}

// dequeue removes w from e's queue and wakes the new head if w was the head.
func (e *entry) dequeue(w *waiter) {
	for i, x := range e.q {
		if x == w {
			copy(e.q[i:], e.q[i+1:])
			e.q[len(e.q)-1] = nil
			e.q = e.q[:len(e.q)-1]
			if len(e.q) == 0 {
				e.q = nil
			}
			if i == 0 {
				e.wake()
			}
			break
		}
	}
	w.on = nil
}

// quiescent reports whether forgetting e loses nothing but its adapted
// concurrency after it was unused for idle.
func (e *entry) quiescent(t, idle int64) bool {
	if e.held != 0 || len(e.q) != 0 || e.tat > t || e.ctat > t || e.suspUntil > t ||
		e.rateUntil > t || e.capUntil > t || e.lastUsed+idle > t {
		return false
	}
	if e.lim.qmax > 0 {
		if e.lim.qcal != Rolling {
			if e.qCount > 0 && t < e.qEnd {
				return false
			}
		} else if len(e.qTimes) > 0 && e.qTimes[len(e.qTimes)-1]+e.lim.qwin > t {
			return false
		}
	}
	return true
}

// sweep forgets the quiescent entries of the locked shard s and shrinks its
// map when most of it went (Go maps never shrink by themselves).
func (en *engine) sweep(s *shard, t int64) {
	every := en.idle / 2
	if every < int64(time.Second) {
		every = int64(time.Second)
	}
	s.nextSweep = t + every
	s.free, s.nfree = nil, 0 // memory follows active keys, permit states included
	for k, e := range s.m {
		if e.quiescent(t, en.idle) {
			if e.touched { // released since: idle from now on
				e.touched, e.lastUsed = false, t
				continue
			}
			delete(s.m, k)
		}
	}
	if s.peak > 64 && len(s.m) < s.peak/4 {
		m := make(map[string]*entry, len(s.m))
		for k, e := range s.m {
			m[k] = e
		}
		s.m = m
		s.peak = len(m)
	}
}
