package deliver

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// poolKey groups idle sessions by source IP and site: a waiter for a site
// can use any idle session to one of its route's hosts.
type poolKey struct {
	src  netip.Addr
	site string
}

// pool keeps idle sessions for reuse. A pooled session still holds its
// governor slot, so a Send that needs a connection of a key waits in the
// key's queue (FIFO) as well as in the governor: a session put back goes
// straight to the first waiter that can use it. An event that changes
// what deliver learned of the receiver (a session closed, a dial that
// failed) wakes the first waiter held by a learned limit to look again;
// waiters in the governor get a freed slot from the governor itself.
// Waking one rather than all keeps the cost of a returned connection
// constant however many Sends wait for the site.
type pool struct {
	s       *Sender
	mu      sync.Mutex
	idle    map[poolKey][]*session
	waiters map[poolKey][]*poolWaiter
	closed  bool
}

// poolWaiter is one Send waiting for a session of its key. ch receives one
// token when the waiter is woken, with ss set when a session was handed
// over; either way the waiter has left the queue.
type poolWaiter struct {
	rt      *route
	ch      chan struct{}
	ss      *session
	woken   bool
	learned bool // held by a learned limit: woken by wake too
	// cancel, when set, ends the waiter's wait in the governor (with
	// errWoken) when it is woken.
	cancel context.CancelCauseFunc
}

// wokenLocked marks w woken, having left its queue, with ss (or nil).
func (w *poolWaiter) wokenLocked(ss *session) {
	w.woken, w.ss = true, ss
	w.ch <- struct{}{}
	if w.cancel != nil {
		w.cancel(errWoken)
	}
}

// waitingInGovernor gives the pool the function that ends w's wait in the
// governor; it is called at once if w was woken already.
func (pl *pool) waitingInGovernor(w *poolWaiter, cancel context.CancelCauseFunc) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if w.woken {
		cancel(errWoken)
		return
	}
	w.cancel = cancel
}

func newPool(s *Sender) *pool {
	return &pool{s: s, idle: make(map[poolKey][]*session), waiters: make(map[poolKey][]*poolWaiter)}
}

// takeOrWait returns an idle session of k to one of rt's hosts, or, when
// there is none to use, a place in k's queue. The caller waits on w.ch
// (with whatever else it waits for) and must end with leave.
func (pl *pool) takeOrWait(k poolKey, rt *route) (*session, *poolWaiter) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if ss := pl.takeLocked(k, rt); ss != nil {
		return ss, nil
	}
	w := &poolWaiter{rt: rt, ch: make(chan struct{}, 1)}
	pl.waiters[k] = append(pl.waiters[k], w)
	return nil, w
}

// heldByLearned marks w as waiting for what deliver learned of the
// receiver to change (wake wakes it).
func (pl *pool) heldByLearned(w *poolWaiter) {
	pl.mu.Lock()
	w.learned = true
	pl.mu.Unlock()
}

// leave ends w's wait. It returns the session handed to w, if any: the
// caller uses it or puts it back. A wake-up w got but will not act on
// (retrying false: the caller stops waiting) goes to the next waiter.
func (pl *pool) leave(k poolKey, w *poolWaiter, retrying bool) *session {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !w.woken {
		q := pl.waiters[k]
		for i, x := range q {
			if x == w {
				pl.setWaitersLocked(k, append(q[:i], q[i+1:]...))
				break
			}
		}
		return nil
	}
	ss := w.ss
	w.ss = nil
	if ss == nil && !retrying {
		pl.wakeOneLocked(k)
	}
	return ss
}

func (pl *pool) setWaitersLocked(k poolKey, q []*poolWaiter) {
	if len(q) == 0 {
		delete(pl.waiters, k)
		return
	}
	pl.waiters[k] = q
}

// wakeOneLocked wakes the first waiter of k held by a learned limit, to
// look again.
func (pl *pool) wakeOneLocked(k poolKey) {
	q := pl.waiters[k]
	for i, w := range q {
		if !w.learned {
			continue
		}
		pl.setWaitersLocked(k, append(q[:i], q[i+1:]...))
		w.wokenLocked(nil)
		return
	}
}

// handLocked gives ss to the first waiter of k that can use it; false
// when none can.
func (pl *pool) handLocked(k poolKey, ss *session) bool {
	q := pl.waiters[k]
	for i, w := range q {
		if !pl.s.canCarry(w.rt, ss) {
			continue
		}
		pl.setWaitersLocked(k, append(q[:i], q[i+1:]...))
		w.wokenLocked(ss)
		return true
	}
	return false
}

// takeLocked returns an idle session of k to one of rt's hosts, or nil.
// Idle sessions found unusable are closed.
func (pl *pool) takeLocked(k poolKey, rt *route) *session {
	now := time.Now()
	list := pl.idle[k]
	for i := len(list) - 1; i >= 0; i-- {
		ss := list[i]
		if !ss.usable(now) {
			list = append(list[:i], list[i+1:]...)
			pl.closeLocked(ss)
			continue
		}
		if !pl.s.canCarry(rt, ss) {
			continue
		}
		list = append(list[:i], list[i+1:]...)
		if len(list) == 0 {
			// The key leaves the map; ss keeps the array for its put,
			// so that the usual take-send-put cycle allocates nothing.
			ss.idleBuf = list[:0]
		}
		pl.setLocked(k, list)
		return ss
	}
	pl.setLocked(k, list)
	return nil
}

// evictOthers closes the idle sessions of k that rt cannot use, so that
// their slots go to a waiter that can.
func (pl *pool) evictOthers(k poolKey, rt *route) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	list := pl.idle[k]
	evicted := false
	for i := len(list) - 1; i >= 0; i-- {
		if ss := list[i]; !pl.s.canCarry(rt, ss) {
			list = append(list[:i], list[i+1:]...)
			pl.closeLocked(ss)
			evicted = true
		}
	}
	pl.setLocked(k, list)
	return evicted
}

func (pl *pool) setLocked(k poolKey, list []*session) {
	if len(list) == 0 {
		delete(pl.idle, k)
		return
	}
	pl.idle[k] = list
}

// put returns ss to the pool (to a waiter first), or closes it when it
// cannot be reused.
func (pl *pool) put(ss *session) {
	k := poolKey{ss.sourceIP, ss.site}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed || pl.s.idleTimeout < 0 || !ss.usable(time.Now()) {
		pl.closeLocked(ss) // wakes a waiter once closed, when its slot is free
		return
	}
	if pl.handLocked(k, ss) {
		return
	}
	list := pl.idle[k]
	if list == nil {
		list = ss.idleBuf // no longer referenced by the map: ss owns it
	}
	ss.idleBuf = nil
	pl.idle[k] = append(list, ss)
	ss.idleSince = time.Now()
	// One timer per session, armed lazily: a busy session is put back
	// after every message, and re-arming a timer each time costs.
	if !ss.timerArmed {
		ss.timerArmed = true
		if ss.idleTimer == nil {
			ss.idleTimer = time.AfterFunc(pl.s.idleTimeout, func() { pl.expire(k, ss) })
		} else {
			ss.idleTimer.Reset(pl.s.idleTimeout)
		}
	}
}

// expire closes ss if it has been idle for the idle timeout, or re-arms
// its timer for the rest.
func (pl *pool) expire(k poolKey, ss *session) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	ss.timerArmed = false
	list := pl.idle[k]
	for i, x := range list {
		if x != ss {
			continue
		}
		if rest := pl.s.idleTimeout - time.Since(ss.idleSince); rest > 0 {
			ss.timerArmed = true
			ss.idleTimer.Reset(rest)
			return
		}
		pl.setLocked(k, append(list[:i], list[i+1:]...))
		pl.closeLocked(ss) // wakes a waiter once closed
		return
	}
	// In use: put arms the timer again.
}

// wake wakes one waiter of k held by a learned limit (a dial ended without
// a session, a session closed).
func (pl *pool) wake(k poolKey) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.wakeOneLocked(k)
}

// closeLocked closes ss in the background (QUIT may take a round trip),
// tracked so that Sender.Close waits for it. Callers hold pl.mu.
func (pl *pool) closeLocked(ss *session) {
	if ss.idleTimer != nil {
		ss.idleTimer.Stop()
	}
	pl.s.bg.Add(1)
	go func() {
		defer pl.s.bg.Done()
		ss.close(pl.s.base, true)
		// Its slot and learned-limit place are free only now: wake the
		// waiters again.
		pl.wake(poolKey{ss.sourceIP, ss.site})
	}()
}

// drain closes the pool and every idle session.
func (pl *pool) drain() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.closed = true
	for k, list := range pl.idle {
		for _, ss := range list {
			pl.closeLocked(ss)
		}
		delete(pl.idle, k)
	}
	for k, q := range pl.waiters {
		for _, w := range q {
			w.wokenLocked(nil)
		}
		delete(pl.waiters, k)
	}
}

func (r *route) hasHost(addr string) bool {
	for _, h := range r.hosts {
		if h.addr == addr {
			return true
		}
	}
	return false
}

// canCarry reports whether ss may carry mail routed by rt.
func (s *Sender) canCarry(rt *route, ss *session) bool {
	return rt.hasHost(ss.host.addr) || (ss.site == rt.site && s.sharedSites[rt.site])
}
