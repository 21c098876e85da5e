package governor

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"
)

// MemoryStore is the in-memory state behind the Store interface: the
// reference implementation of the Store contract, and what the conformance
// suite in governor/storetest checks itself against. A Governor without a
// Config.Store uses the same state directly, without this indirection.
type MemoryStore struct {
	en *engine

	mu        sync.Mutex
	waiters   map[string]*waiter  // refused tickets still queued
	holders   map[string]struct{} // tickets holding slots
	cancelled map[string]int64    // granted events cancelled, until when they are remembered (tick)
	nextPrune int64               // when cancelled is next pruned (tick)
}

var _ Store = (*MemoryStore)(nil)

// storeEpoch is the tick origin of a MemoryStore: times given to it are
// caller-chosen, so they may be far from the process start.
var storeEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// NewMemoryStore returns an empty store that forgets keys quiescent for
// idle (0: DefaultIdleTimeout; negative: never).
func NewMemoryStore(idle time.Duration) *MemoryStore {
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	return &MemoryStore{
		en:        newEngine(storeEpoch, idle),
		waiters:   make(map[string]*waiter),
		holders:   make(map[string]struct{}),
		cancelled: make(map[string]int64),
	}
}

// remember is how long a MemoryStore remembers a cancelled event's ticket,
// so that a repeated Cancel gives back nothing more (contract 6): the idle
// timeout, or DefaultIdleTimeout when keys are never forgotten.
func (ms *MemoryStore) remember() int64 {
	if ms.en.idle > 0 {
		return ms.en.idle
	}
	return int64(DefaultIdleTimeout)
}

// grantToken is the Token of a MemoryStore's event grant: the tick it was
// committed at, which tells Cancel which calendar-quota count it went into.
func grantToken(t int64) string { return strconv.FormatInt(t, 10) }

// committedAt is the commit tick a Grant's Token names; a Grant without a
// valid Token (not from this store) is taken as committed at its Start.
func (ms *MemoryStore) committedAt(g Grant) int64 {
	if t, err := strconv.ParseInt(g.Token, 10, 64); err == nil {
		return t
	}
	return ms.en.tick(g.Start)
}

// lockKeys locks the shards of sorted keys and returns their entries with
// their limits set.
func (ms *MemoryStore) lockKeys(b *batch, keys []string, lims []Limits, t int64) {
	en := ms.en
	b.kbig = keys
	b.setShards(en, keys)
	b.lock(en)
	b.ebig = make([]*entry, len(keys))
	for i, k := range keys {
		e := en.get(&en.shards[en.shardOf(k)], k, nil, t)
		if lims != nil {
			e.setLim(compileLimits(lims[i]))
		} else if e.lim == nil {
			e.setLim(compileLimits(Limits{}))
		}
		b.ebig[i] = e
	}
}

func (ms *MemoryStore) checkRequest(req *Request) error {
	if len(req.Limits) != len(req.Keys) {
		return errLimitsMismatch
	}
	for i, k := range req.Keys {
		if k == "" || (i > 0 && req.Keys[i-1] >= k) {
			return errUnsortedKeys
		}
	}
	return nil
}

// Reserve implements Store.
func (ms *MemoryStore) Reserve(_ context.Context, req *Request) (Grant, error) {
	if err := ms.checkRequest(req); err != nil {
		return Grant{}, err
	}
	en := ms.en
	t := en.tick(req.Now)
	var w *waiter
	if !req.Try {
		ms.mu.Lock()
		w = ms.waiters[req.Ticket]
		ms.mu.Unlock()
	}
	deadline := int64(math.MaxInt64)
	if !req.Deadline.IsZero() {
		deadline = en.tick(req.Deadline)
	}
	var b batch
	ms.lockKeys(&b, req.Keys, req.Limits, t)
	v := en.eval(b.ents(), req.Kind, req.Now, t, w, nil, req.Try, deadline)
	if v.ok {
		en.commit(b.ents(), req.Kind, t, v.start, w)
		b.unlock(en)
		ms.mu.Lock()
		delete(ms.waiters, req.Ticket)
		if req.Kind == KindSlot {
			ms.holders[req.Ticket] = struct{}{}
		}
		ms.mu.Unlock()
		g := Grant{OK: true, Start: en.wall(v.start)}
		if req.Kind == KindEvent {
			g.Token = grantToken(t)
		}
		if v.idx >= 0 {
			g.Decision = Decision{OK: true, Start: g.Start, Key: req.Keys[v.idx], Limit: v.limit}
		}
		return g, nil
	}
	d := Decision{Key: req.Keys[v.idx], Limit: v.limit, Reason: v.reason}
	if v.retry != unknown {
		d.RetryAt = en.wall(v.retry)
	}
	if req.Try || v.limit == LimitRate || v.limit == LimitConnectionRate {
		// Try requests never queue; a token due after the deadline means
		// the caller gives up.
		if w != nil && w.on != nil {
			w.on.dequeue(w)
		}
		b.unlock(en)
		if w != nil {
			ms.mu.Lock()
			delete(ms.waiters, req.Ticket)
			ms.mu.Unlock()
		}
		return Grant{Decision: d}, nil
	}
	if w == nil {
		w = &waiter{ch: make(chan struct{}, 1), ticket: req.Ticket}
	}
	b.ents()[v.idx].enqueue(w)
	b.unlock(en)
	ms.mu.Lock()
	ms.waiters[req.Ticket] = w
	ms.mu.Unlock()
	return Grant{Decision: d, Wake: w.ch}, nil
}

// Cancel implements Store.
func (ms *MemoryStore) Cancel(_ context.Context, req *Request, g Grant) error {
	en := ms.en
	t := en.tick(req.Now)
	ms.mu.Lock()
	w := ms.waiters[req.Ticket]
	delete(ms.waiters, req.Ticket)
	_, held := ms.holders[req.Ticket]
	delete(ms.holders, req.Ticket)
	again := false
	if g.OK && req.Kind == KindEvent {
		if _, again = ms.cancelled[req.Ticket]; !again {
			ms.cancelled[req.Ticket] = t + ms.remember()
		}
		if t >= ms.nextPrune {
			for k, until := range ms.cancelled {
				if until <= t {
					delete(ms.cancelled, k)
				}
			}
			ms.nextPrune = t + ms.remember()/2
		}
	}
	ms.mu.Unlock()
	if !g.OK && w == nil {
		return nil
	}
	if g.OK && (req.Kind == KindSlot && !held || again) {
		return nil // released or cancelled already
	}
	var b batch
	ms.lockKeys(&b, req.Keys, nil, t)
	if g.OK {
		en.undo(b.ents(), req.Kind, ms.committedAt(g), en.tick(g.Start), t)
	}
	if w != nil && w.on != nil {
		w.on.dequeue(w)
	}
	b.unlock(en)
	return nil
}

// Release implements Store.
func (ms *MemoryStore) Release(_ context.Context, req *Request) error {
	ms.mu.Lock()
	_, held := ms.holders[req.Ticket]
	delete(ms.holders, req.Ticket)
	ms.mu.Unlock()
	if !held {
		return nil
	}
	en := ms.en
	t := en.tick(req.Now)
	var b batch
	ms.lockKeys(&b, req.Keys, nil, t)
	en.release(b.ents())
	b.unlock(en)
	return nil
}

// Feedback implements Store.
func (ms *MemoryStore) Feedback(_ context.Context, now time.Time, key string, lim Limits, s Signal) error {
	if key == "" {
		return ErrInvalidKey
	}
	en := ms.en
	t := en.tick(now)
	if s.Started.IsZero() {
		s.Started = now
	}
	var b batch
	keys := [1]string{key}
	lims := [1]Limits{lim}
	ms.lockKeys(&b, keys[:], lims[:], t)
	b.ents()[0].feedback(s, t, en.tick(s.Started))
	b.unlock(en)
	return nil
}

// Suspend implements Store.
func (ms *MemoryStore) Suspend(_ context.Context, now time.Time, key string, until time.Time, reason string) error {
	return ms.suspension(now, key, until, reason)
}

// Resume implements Store.
func (ms *MemoryStore) Resume(_ context.Context, now time.Time, key string) error {
	return ms.suspension(now, key, time.Time{}, "")
}

func (ms *MemoryStore) suspension(now time.Time, key string, until time.Time, reason string) error {
	if key == "" {
		return ErrInvalidKey
	}
	en := ms.en
	t := en.tick(now)
	var b batch
	keys := [1]string{key}
	ms.lockKeys(&b, keys[:], nil, t)
	b.ents()[0].setSuspension(en, until, reason)
	b.unlock(en)
	return nil
}

// Snapshot implements Store.
func (ms *MemoryStore) Snapshot(_ context.Context, now time.Time) ([]KeyState, error) {
	return ms.en.snapshot(nil, now), nil
}

// EvictIdle forgets the keys quiescent for the idle timeout at now.
func (ms *MemoryStore) EvictIdle(now time.Time) { ms.en.evictIdle(now) }
