package deliver

import (
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
// governor slot, so waiters for the same key are woken (signal) when one
// comes back, rather than waiting for the governor.
type pool struct {
	s      *Sender
	mu     sync.Mutex
	idle   map[poolKey][]*session
	sig    map[poolKey]chan struct{}
	closed bool
}

func newPool(s *Sender) *pool {
	return &pool{s: s, idle: make(map[poolKey][]*session), sig: make(map[poolKey]chan struct{})}
}

// take returns an idle session of k to one of rt's hosts, or nil. Idle
// sessions found unusable are closed.
func (pl *pool) take(k poolKey, rt *route) *session {
	now := time.Now()
	pl.mu.Lock()
	defer pl.mu.Unlock()
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

// put returns ss to the pool, or closes it when it cannot be reused.
func (pl *pool) put(ss *session) {
	k := poolKey{ss.sourceIP, ss.site}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed || pl.s.idleTimeout < 0 || !ss.usable(time.Now()) {
		pl.closeLocked(ss)
		pl.signalLocked(k) // a slot frees up: let waiters re-check
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
	pl.signalLocked(k)
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
		pl.closeLocked(ss)
		pl.signalLocked(k)
		return
	}
	// In use: put arms the timer again.
}

// signal returns a channel closed the next time a session of k is put back.
func (pl *pool) signal(k poolKey) <-chan struct{} {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	ch, ok := pl.sig[k]
	if !ok {
		ch = make(chan struct{})
		pl.sig[k] = ch
	}
	return ch
}

// wake wakes the waiters of k (a dial ended without a session).
func (pl *pool) wake(k poolKey) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.signalLocked(k)
}

func (pl *pool) signalLocked(k poolKey) {
	if ch, ok := pl.sig[k]; ok {
		close(ch)
		delete(pl.sig, k)
	}
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
	for k := range pl.sig {
		pl.signalLocked(k)
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
