package governor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Governor enforces a Policy's limits over keys. It is safe for concurrent
// use and starts no goroutines: there is nothing to close.
type Governor struct {
	policy atomic.Pointer[compiledPolicy]
	mem    *engine // in-memory state (always present; used when store is nil)
	store  Store

	randMu sync.Mutex
	rnd    RandSource

	onStoreError func(error)

	permits sync.Pool
	tickets atomic.Uint64
	prefix  string
}

// New returns a Governor for cfg. It fails only if cfg.Policy is invalid
// (a *PolicyError wrapping ErrInvalidPolicy).
func New(cfg Config) (*Governor, error) {
	cp, err := compilePolicy(cfg.Policy)
	if err != nil {
		return nil, err
	}
	idle := cfg.IdleTimeout
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	g := &Governor{mem: newEngine(time.Now(), idle), store: cfg.Store, rnd: cfg.Rand, prefix: cfg.Tickets}
	if g.rnd == nil {
		var seed [16]byte
		_, _ = rand.Read(seed[:])
		g.rnd = mrand.NewPCG(leUint64(seed[:8]), leUint64(seed[8:]))
	}
	if g.prefix == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		g.prefix = hex.EncodeToString(b[:])
	}
	g.onStoreError = cfg.OnStoreError
	g.policy.Store(cp)
	g.permits.New = func() any { return &permitState{g: g} }
	return g, nil
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// Policy returns the policy in force.
func (g *Governor) Policy() *Policy { return g.policy.Load().p }

// SetPolicy replaces the policy at once. Every key keeps its state (slots
// held, tokens, quota counts, suspensions, adapted concurrency); the new
// limits apply from the next decision on, and blocked calls re-check at once
// (with a Config.Store too: they Reserve again with the new Limits).
func (g *Governor) SetPolicy(p *Policy) error {
	cp, err := compilePolicy(p)
	if err != nil {
		return err
	}
	close(g.policy.Swap(cp).replaced) // wakes the calls waiting on a Store
	for i := range g.mem.shards {
		s := &g.mem.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			e.wake()
		}
		s.mu.Unlock()
	}
	return nil
}

// Permit is a held slot on each key of an Acquire. Release it exactly once
// when the work ends; further Releases (of it or its copies) do nothing. The
// zero Permit holds nothing.
type Permit struct {
	st    *permitState
	gen   uint64
	start int64     // grant tick (engine.epoch based)
	dec   *Decision // the Decision when it says more than "granted at start"
}

type permitState struct {
	g    *Governor
	gen  atomic.Uint64
	ebuf [4]*entry
	ents []*entry
	req  *Request     // with a Store
	next *permitState // in shard.free
}

// Release frees the permit's slots and wakes the next waiters. It is safe
// to call more than once and from any goroutine.
func (p Permit) Release() {
	st := p.st
	if st == nil || !st.gen.CompareAndSwap(p.gen, p.gen+1) {
		return
	}
	g := st.g
	if st.req != nil {
		req := st.req
		req.Now = g.now()
		g.reportStoreError(g.store.Release(context.Background(), req))
		st.req = nil
	} else {
		ents := st.ents
		if len(ents) == 1 {
			e := ents[0]
			st.ebuf[0], st.ents = nil, nil
			s := e.shard
			s.mu.Lock()
			e.release()
			if s.nfree < maxFreePermits { // keep it for the shard's next fast grant
				st.next, s.free = s.free, st
				s.nfree++
				st = nil
			}
			s.mu.Unlock()
			if st != nil {
				g.permits.Put(st)
			}
			return
		} else if len(ents) > 1 {
			var b batch
			b.setEnts(ents)
			b.lock(g.mem)
			g.mem.release(ents)
			b.unlock(g.mem)
		}
		clear(st.ebuf[:])
		st.ents = nil
	}
	g.permits.Put(st)
}

// Held reports whether the permit holds slots (it was granted and not yet released).
func (p Permit) Held() bool { return p.st != nil && p.st.gen.Load() == p.gen }

// Acquired returns when the permit was granted: the Started value for
// Signals about work done under it. Zero for the zero Permit.
func (p Permit) Acquired() time.Time {
	if p.st == nil {
		return time.Time{}
	}
	return p.st.g.mem.wall(p.start) // st.g never changes: no race after reuse
}

// Decision explains how the permit was granted.
func (p Permit) Decision() Decision {
	if p.st == nil {
		return Decision{}
	}
	if p.dec != nil {
		return *p.dec
	}
	return Decision{OK: true, Start: p.Acquired()}
}

func (g *Governor) newPermit(ents []*entry, req *Request, d Decision) Permit {
	st := g.permits.Get().(*permitState)
	if req != nil {
		st.req = req
	} else if len(ents) <= len(st.ebuf) {
		st.ents = st.ebuf[:copy(st.ebuf[:], ents)]
	} else {
		st.ents = slices.Clone(ents)
	}
	p := Permit{st: st, gen: st.gen.Load(), start: g.mem.tick(d.Start)}
	if d.Waited != 0 || d.Limit != LimitNone {
		p.dec = new(Decision) // a call that waited: one allocation is nothing next to the wait
		*p.dec = d
	}
	return p
}

// Acquire blocks until it holds one concurrency slot and has taken one
// ConnectionRate token on every key, all at once, and returns the Permit
// that holds the slots. It honours the keys' suspensions and send windows.
// Waiters on a key are served first come, first served. When ctx ends first,
// or the wait is known to end after ctx's deadline (then at once), it returns
// a *WaitError and holds nothing. Keys may repeat and come in any order.
func (g *Governor) Acquire(ctx context.Context, keys ...string) (Permit, error) {
	if g.store != nil {
		d, req, err := g.storeRun(ctx, KindSlot, keys, false, nil)
		if err != nil || !d.OK {
			return Permit{}, err
		}
		return g.newPermit(nil, req, d), nil
	}
	if len(keys) == 1 {
		if e, t, st := g.fast(ctx, keys[0], KindSlot); e != nil {
			return g.newPermit1(e, t, st), nil
		}
	}
	var b batch
	if err := b.prepare(keys); err != nil {
		return Permit{}, err
	}
	d, err := g.memRun(ctx, &b, KindSlot, false, nil)
	if err != nil {
		return Permit{}, err
	}
	return g.newPermit(b.ents(), nil, d), nil
}

// fast grants a one-key request that needs no waiting, no queue, no quota,
// window, suspension or jitter, under one lock with no batch to set up. It
// returns nil when the general path must decide (including every error).
func (g *Governor) fast(ctx context.Context, key string, kind Kind) (*entry, int64, *permitState) {
	if key == "" || ctx.Err() != nil {
		return nil, 0, nil
	}
	en := g.mem
	t := en.tick1()
	cp := g.policy.Load()
	s := &en.shards[en.shardOf(key)]
	s.mu.Lock()
	e := en.get(s, key, cp, t)
	l := e.limits(cp)
	if len(e.q) > 0 || e.suspUntil > t || l.winOn {
		s.mu.Unlock()
		return nil, 0, nil
	}
	if kind == KindSlot {
		if n := e.slots(); n > 0 && int(e.held) >= n {
			s.mu.Unlock()
			return nil, 0, nil
		}
		if l.civl > 0 {
			iv := e.ivl(l.civl, t)
			if ready(e.ctat, t, iv, burstOf(l.raw.ConnectionBurst)) > t {
				s.mu.Unlock()
				return nil, 0, nil
			}
			e.ctat = max(e.ctat, t) + iv
		}
		e.held++
	} else {
		if l.qmax > 0 || l.jitter > 0 {
			s.mu.Unlock()
			return nil, 0, nil
		}
		if l.ival > 0 {
			iv := e.ivl(l.ival, t)
			if ready(e.tat, t, iv, burstOf(l.raw.Burst)) > t {
				s.mu.Unlock()
				return nil, 0, nil
			}
			e.tat = max(e.tat, t) + iv
		}
	}
	e.lastUsed = t
	var st *permitState
	if kind == KindSlot && s.free != nil {
		st, s.free = s.free, s.free.next
		st.next = nil
		s.nfree--
	}
	s.mu.Unlock()
	return e, t, st
}

func (g *Governor) newPermit1(e *entry, t int64, st *permitState) Permit {
	if st == nil {
		st = g.permits.Get().(*permitState)
	}
	st.ebuf[0] = e
	st.ents = st.ebuf[:1]
	return Permit{st: st, gen: st.gen.Load(), start: t}
}

// TryAcquire is Acquire without waiting: it grants only if every key has a
// free slot and a connection token now and nobody is queued before it. When
// it does not, the Decision says which key and limit refused it and, for
// time limits, when it would succeed (RetryAt). err is non-nil only for
// invalid keys or a failing Store.
func (g *Governor) TryAcquire(keys ...string) (Permit, Decision, error) {
	if g.store != nil {
		d, req, err := g.storeRun(context.Background(), KindSlot, keys, true, nil)
		if err != nil || !d.OK {
			return Permit{}, d, err
		}
		return g.newPermit(nil, req, d), d, nil
	}
	if len(keys) == 1 {
		if e, t, st := g.fast(context.Background(), keys[0], KindSlot); e != nil {
			p := g.newPermit1(e, t, st)
			return p, p.Decision(), nil
		}
	}
	var b batch
	if err := b.prepare(keys); err != nil {
		return Permit{}, Decision{}, err
	}
	d, err := g.memRun(context.Background(), &b, KindSlot, true, nil)
	if err != nil || !d.OK {
		return Permit{}, d, err
	}
	return g.newPermit(b.ents(), nil, d), d, nil
}

// Take blocks until one event may start on every key: one Rate token and
// one Quota unit are taken on each, all at once, within the send windows and
// not while suspended, plus a random Jitter delay. Tokens that come later are
// reserved at once (FIFO), and Take returns when they are due. When ctx ends
// first, what was taken is given back and a *WaitError returned; a wait known
// to end after ctx's deadline fails at once. Jitter is cut short at the deadline.
func (g *Governor) Take(ctx context.Context, keys ...string) (Decision, error) {
	if g.store != nil {
		d, _, err := g.storeRun(ctx, KindEvent, keys, false, nil)
		return d, err
	}
	if len(keys) == 1 {
		if e, t, _ := g.fast(ctx, keys[0], KindEvent); e != nil {
			return Decision{OK: true, Start: g.mem.wall(t)}, nil
		}
	}
	var b batch
	if err := b.prepare(keys); err != nil {
		return Decision{}, err
	}
	return g.memRun(ctx, &b, KindEvent, false, nil)
}

// TryTake is Take without waiting and without jitter: it takes a token and
// a quota unit on every key only if all are available now; otherwise the
// Decision says which key and limit refused it and when it would succeed.
func (g *Governor) TryTake(keys ...string) (Decision, error) {
	if g.store != nil {
		d, _, err := g.storeRun(context.Background(), KindEvent, keys, true, nil)
		return d, err
	}
	if len(keys) == 1 {
		if e, t, _ := g.fast(context.Background(), keys[0], KindEvent); e != nil {
			return Decision{OK: true, Start: g.mem.wall(t)}, nil
		}
	}
	var b batch
	if err := b.prepare(keys); err != nil {
		return Decision{}, err
	}
	return g.memRun(context.Background(), &b, KindEvent, true, nil)
}

// batch is the sorted, distinct keys of one request, their entries and
// the shards to lock, kept in arrays for up to four keys. It holds no
// slice of its own arrays, so that it stays on the caller's stack.
type batch struct {
	nk, ne, ns int
	s0         *shard   // the shard of a single key
	kidx       [4]uint8 // the shard of each key in kbuf
	kbuf       [4]string
	ebuf       [4]*entry
	sbuf       [4]int
	kbig       []string
	ebig       []*entry
	sbig       []int
}

func (b *batch) keys() []string {
	if b.kbig != nil {
		return b.kbig
	}
	return b.kbuf[:b.nk]
}

func (b *batch) ents() []*entry {
	if b.ebig != nil {
		return b.ebig
	}
	return b.ebuf[:b.ne]
}

func (b *batch) shards() []int {
	if b.sbig != nil {
		return b.sbig
	}
	return b.sbuf[:b.ns]
}

// prepare validates, sorts and de-duplicates keys into b.
func (b *batch) prepare(keys []string) error {
	for _, k := range keys {
		if k == "" {
			return ErrInvalidKey
		}
	}
	b.setKeys(keys)
	if b.kbig != nil {
		slices.Sort(b.kbig)
		b.kbig = slices.Compact(b.kbig)
	} else if b.nk > 1 {
		ks := b.kbuf[:b.nk]
		slices.Sort(ks)
		b.nk = len(slices.Compact(ks))
	}
	return nil
}

// setKeys copies keys into b (the caller's slice is not changed).
func (b *batch) setKeys(keys []string) {
	if len(keys) <= len(b.kbuf) {
		b.nk = copy(b.kbuf[:], keys)
	} else {
		b.kbig = slices.Clone(keys)
	}
}

// setShards computes the distinct shards of the keys, ascending.
func (b *batch) setShards(en *engine, keys []string) {
	if len(keys) <= len(b.sbuf) {
		for i, k := range keys {
			b.kidx[i] = uint8(en.shardOf(k))
			b.sbuf[i] = int(b.kidx[i])
		}
		sh := b.sbuf[:len(keys)]
		slices.Sort(sh)
		b.ns = len(slices.Compact(sh))
		return
	}
	b.sbig = make([]int, len(keys))
	for i, k := range keys {
		b.sbig[i] = en.shardOf(k)
	}
	slices.Sort(b.sbig)
	b.sbig = slices.Compact(b.sbig)
}

// setEnts makes b hold the shards of ents, to release them.
func (b *batch) setEnts(ents []*entry) {
	if len(ents) <= len(b.sbuf) {
		for i, e := range ents {
			b.sbuf[i] = int(e.si)
		}
		sh := b.sbuf[:len(ents)]
		slices.Sort(sh)
		b.ns = len(slices.Compact(sh))
		return
	}
	b.sbig = make([]int, len(ents))
	for i, e := range ents {
		b.sbig[i] = int(e.si)
	}
	slices.Sort(b.sbig)
	b.sbig = slices.Compact(b.sbig)
}

// resolve locks the shards and finds (creating) every key's entry.
func (b *batch) resolve(en *engine, cp *compiledPolicy, t int64) {
	keys := b.keys()
	if len(keys) == 1 {
		if b.s0 == nil {
			b.s0 = &en.shards[en.shardOf(keys[0])]
		}
		b.s0.mu.Lock()
		b.ebuf[0] = en.get(b.s0, keys[0], cp, t)
		b.ne = 1
		return
	}
	if b.ns == 0 && b.sbig == nil {
		b.setShards(en, keys)
	}
	b.lock(en)
	if len(keys) <= len(b.ebuf) {
		for i, k := range keys {
			b.ebuf[i] = en.get(&en.shards[b.kidx[i]], k, cp, t)
		}
		b.ne = len(keys)
		return
	}
	if b.ebig == nil {
		b.ebig = make([]*entry, len(keys))
	}
	for i, k := range keys {
		b.ebig[i] = en.get(&en.shards[en.shardOf(k)], k, cp, t)
	}
}

func (b *batch) lock(en *engine) {
	if b.ns == 0 && b.sbig == nil {
		if b.s0 == nil {
			b.s0 = &en.shards[en.shardOf(b.keys()[0])]
		}
		b.s0.mu.Lock()
		return
	}
	for _, i := range b.shards() {
		en.shards[i].mu.Lock()
	}
}

func (b *batch) unlock(en *engine) {
	if b.ns == 0 && b.sbig == nil {
		b.s0.mu.Unlock()
		return
	}
	for _, i := range b.shards() {
		en.shards[i].mu.Unlock()
	}
}

// taken is what a granted event committed: the ticks of its commit and of
// its Start before jitter (the stamp of its rolling-quota units), for undo.
type taken struct{ commit, start int64 }

// memRun runs one request against the in-memory state. When tk is not nil
// and the request is granted, it receives the ticks undo needs.
func (g *Governor) memRun(ctx context.Context, b *batch, kind Kind, try bool, tk *taken) (Decision, error) {
	en := g.mem
	now, t := en.clock()
	if b.nk == 0 && b.kbig == nil {
		return Decision{OK: true, Start: now}, nil
	}
	first := now
	deadline := int64(math.MaxInt64)
	if !try {
		if err := ctx.Err(); err != nil {
			return Decision{}, &WaitError{Err: err}
		}
		if dl, ok := ctx.Deadline(); ok {
			deadline = en.tick(dl)
		}
	}
	var w *waiter
	var held Decision // the last limit that held the call up
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		cp := g.policy.Load()
		b.resolve(en, cp, t)
		v := en.eval(b.ents(), kind, now, t, w, cp, try, deadline)
		if v.ok {
			start := v.start
			d := Decision{OK: true}
			if v.idx >= 0 {
				d.Key, d.Limit = b.ents()[v.idx].key, v.limit
			} else if w != nil {
				d.Key, d.Limit, d.Reason = held.Key, held.Limit, held.Reason
			}
			if kind == KindEvent && !try {
				if j, jk := g.jitter(b.ents()); j > 0 {
					if start+j > deadline {
						j = max(deadline-start, 0)
					}
					if j > v.start-t {
						d.Key, d.Limit = jk, LimitJitter
					}
					start += j
				}
			}
			en.commit(b.ents(), kind, t, v.start, w)
			b.unlock(en)
			if tk != nil {
				tk.commit, tk.start = t, v.start
			}
			if start == t {
				d.Start = now
				if w != nil {
					d.Waited = now.Sub(first)
				}
				return d, nil
			}
			d.Start = en.wall(start)
			if err := sleepCtx(ctx, &timer, time.Duration(start-t)); err != nil {
				_, tn := en.clock()
				b.resolve(en, g.policy.Load(), tn)
				en.undo(b.ents(), kind, t, v.start, tn)
				b.unlock(en)
				d.OK = false
				d.RetryAt = d.Start
				return d, &WaitError{Decision: d, Err: err}
			}
			nw, _ := en.clock()
			d.Waited = nw.Sub(first)
			return d, nil
		}
		d := Decision{Key: b.ents()[v.idx].key, Limit: v.limit, Reason: v.reason}
		if v.retry != unknown {
			d.RetryAt = en.wall(v.retry)
		}
		if try {
			b.unlock(en)
			return d, nil
		}
		if v.retry != unknown && v.retry > deadline {
			if w != nil && w.on != nil {
				w.on.dequeue(w)
			}
			b.unlock(en)
			return d, &WaitError{Decision: d, Err: context.DeadlineExceeded}
		}
		if w == nil {
			w = &waiter{ch: make(chan struct{}, 1)}
		}
		held = d
		b.ents()[v.idx].enqueue(w)
		b.unlock(en)
		var tc <-chan time.Time
		if v.retry != unknown {
			resetTimer(&timer, time.Duration(v.retry-t))
			tc = timer.C
		}
		select {
		case <-w.ch:
		case <-tc:
		case <-ctx.Done():
			_, tn := en.clock()
			b.resolve(en, g.policy.Load(), tn)
			if w.on != nil {
				w.on.dequeue(w)
			}
			b.unlock(en)
			return d, &WaitError{Decision: d, Err: ctx.Err()}
		}
		now, t = en.clock()
	}
}

func resetTimer(timer **time.Timer, d time.Duration) {
	if *timer == nil {
		*timer = time.NewTimer(d)
		return
	}
	(*timer).Reset(d)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, timer **time.Timer, d time.Duration) error {
	resetTimer(timer, d)
	select {
	case <-(*timer).C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// jitter draws the random delay for a request: uniform in [0, J) where J is
// the largest Jitter of its keys.
func (g *Governor) jitter(ents []*entry) (int64, string) {
	var j int64
	var key string
	for _, e := range ents {
		if e.lim.jitter > j {
			j, key = e.lim.jitter, e.key
		}
	}
	if j <= 0 {
		return 0, ""
	}
	g.randMu.Lock()
	r := g.rnd.Uint64()
	g.randMu.Unlock()
	return int64(float64(r>>11) / (1 << 53) * float64(j)), key
}

// Feedback applies a signal to key (see SignalKind and Adaptive). Report a
// Congestion before releasing the Permit of the refused work, so that the
// governor sees how many holders the receiver refused at. It fails only for
// an invalid key or a failing Store.
func (g *Governor) Feedback(key string, s Signal) error {
	if key == "" {
		return ErrInvalidKey
	}
	now, t := g.mem.clock()
	if s.Started.IsZero() {
		s.Started = now
	}
	cp := g.policy.Load()
	if g.store != nil {
		return storeErr(g.store.Feedback(context.Background(), now, key, cp.lookup(key).raw, s))
	}
	en := g.mem
	sh := &en.shards[en.shardOf(key)]
	sh.mu.Lock()
	e := en.get(sh, key, cp, t)
	e.limits(cp)
	e.feedback(s, t, en.tick(s.Started))
	sh.mu.Unlock()
	return nil
}

// feedback applies s to e; started is the tick the work began.
func (e *entry) feedback(s Signal, t, started int64) {
	l := e.lim
	e.own()
	if s.Reason != "" {
		e.reason = s.Reason
	}
	switch s.Kind {
	case Success:
		e.failures = 0
		if l.maxConc == 0 {
			return
		}
		old := e.slots()
		c := max(e.eff, 1)
		n := e.eff + l.increase/c
		if e.capUntil > t && n > e.capAt {
			n = max(e.capAt, e.eff)
		}
		n = min(n, float64(l.maxConc))
		if n != e.eff {
			e.eff, e.adapted = n, true
		}
		if e.slots() > old {
			e.wake()
		}
	case Congestion:
		if l.maxConc == 0 || started <= e.lastDecrease {
			return
		}
		e.lastDecrease = t
		n := max(e.eff*l.decrease, 1)
		// The receiver accepted the other holders; reported after the
		// release (no other holder) it accepted one fewer than we allowed.
		seen := float64(e.held - 1)
		if e.held <= 1 {
			seen = math.Floor(e.eff) - 1
		}
		seen = max(seen, 1)
		e.capAt = min(max(n, seen), max(e.eff, 1))
		e.capUntil = t + l.probeAfter
		e.eff, e.adapted = n, true
	case RateLimited:
		if !l.limitedRate {
			e.suspend(t+l.ratePause, "rate limited: "+s.Reason)
			return
		}
		if e.rateUntil <= t {
			e.rateMul = 1
		}
		if e.rateUntil <= t || started > e.lastRateCut {
			e.rateMul = max(e.rateMul*l.rateFactor, 1e-6)
			e.lastRateCut = t
		}
		e.rateUntil = t + l.rateFor
	case Failure:
		e.failures++
		n := l.cohort
		if n == 0 {
			n = DefaultFailureCohort
			if l.maxConc > 0 {
				n = e.slots()
			}
		}
		if e.failures >= n {
			e.failures = 0
			e.suspend(t+l.suspendFor, "failed cohort of "+strconv.Itoa(n)+": "+s.Reason)
		}
	}
}

func (e *entry) suspend(until int64, reason string) {
	e.own()
	if until > e.suspUntil {
		e.suspUntil = until
		e.suspReason = reason
	}
}

// Suspend stops new grants on key until the given time (Acquire and Take
// wait, Try forms refuse with LimitSuspended and the reason). Slots already
// held are not affected. A later Suspend replaces the time.
func (g *Governor) Suspend(key string, until time.Time, reason string) error {
	return g.setSuspension(key, until, reason)
}

// Resume ends key's suspension (and its failure count) at once.
func (g *Governor) Resume(key string) error {
	return g.setSuspension(key, time.Time{}, "")
}

func (g *Governor) setSuspension(key string, until time.Time, reason string) error {
	if key == "" {
		return ErrInvalidKey
	}
	now := g.now()
	if g.store != nil {
		if until.IsZero() {
			return storeErr(g.store.Resume(context.Background(), now, key))
		}
		return storeErr(g.store.Suspend(context.Background(), now, key, until, reason))
	}
	en := g.mem
	t := en.tick(now)
	cp := g.policy.Load()
	sh := &en.shards[en.shardOf(key)]
	sh.mu.Lock()
	e := en.get(sh, key, cp, t)
	e.limits(cp)
	e.setSuspension(en, until, reason)
	sh.mu.Unlock()
	return nil
}

// setSuspension suspends e until the given time, or resumes it (zero until).
func (e *entry) setSuspension(en *engine, until time.Time, reason string) {
	e.own()
	if until.IsZero() {
		e.suspUntil, e.failures = 0, 0
	} else {
		e.suspUntil, e.suspReason = en.tick(until), reason
		if reason != "" {
			e.reason = reason
		}
	}
	e.wake()
}

// Snapshot returns the state of every key the governor remembers, sorted
// by key. It locks one shard at a time, so it is cheap but not atomic across
// keys.
func (g *Governor) Snapshot() ([]KeyState, error) {
	now := g.now()
	cp := g.policy.Load()
	if g.store != nil {
		ks, err := g.store.Snapshot(context.Background(), now)
		if err != nil {
			return nil, storeErr(err)
		}
		for i := range ks {
			ks[i].Limits = cp.lookup(ks[i].Key).raw
		}
		return ks, nil
	}
	return g.mem.snapshot(cp, now), nil
}

// snapshot returns every entry's state, sorted by key.
func (en *engine) snapshot(cp *compiledPolicy, now time.Time) []KeyState {
	t := en.tick(now)
	var out []KeyState
	for i := range en.shards {
		s := &en.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			e.limits(cp)
			out = append(out, e.state(en, now, t))
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b KeyState) int { return cmpString(a.Key, b.Key) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// state describes e at t.
func (e *entry) state(en *engine, now time.Time, t int64) KeyState {
	l := e.lim
	ks := KeyState{
		Key: e.key, Limits: l.raw, InFlight: int(e.held), Waiting: len(e.q),
		Concurrency: e.slots(), LastReason: e.reason, LastUsed: en.wall(e.lastUsed),
	}
	if iv := e.ivl(l.ival, t); iv > 0 {
		ks.Rate = ratePerSecond(iv)
		ks.Tokens = tokens(e.tat, t, iv, burstOf(l.raw.Burst))
	}
	if iv := e.ivl(l.civl, t); iv > 0 {
		ks.ConnectionRate = ratePerSecond(iv)
		ks.ConnectionTokens = tokens(e.ctat, t, iv, burstOf(l.raw.ConnectionBurst))
	}
	if l.qmax > 0 {
		if l.qcal != Rolling {
			if t < e.qEnd {
				ks.QuotaUsed = e.qCount
				if e.qCount > 0 {
					ks.QuotaResets = en.wall(e.qEnd)
				}
			}
		} else {
			e.dropExpired(t)
			ks.QuotaUsed = len(e.qTimes)
			if len(e.qTimes) > 0 {
				ks.QuotaResets = en.wall(e.qTimes[0] + l.qwin)
			}
		}
	}
	if e.suspUntil > t {
		ks.SuspendedUntil = en.wall(e.suspUntil)
	}
	return ks
}

func tokens(tat, t, iv, burst int64) float64 {
	return float64(burst) - float64(max(tat, t)-t)/float64(iv)
}

// EvictIdle forgets every key that has been quiescent for the idle timeout
// now, instead of waiting for the lazy sweep that runs as keys are created.
func (g *Governor) EvictIdle() { g.mem.evictIdle(g.now()) }

func (en *engine) evictIdle(now time.Time) {
	if en.idle < 0 {
		return
	}
	t := en.tick(now)
	for i := range en.shards {
		s := &en.shards[i]
		s.mu.Lock()
		en.sweep(s, t)
		s.mu.Unlock()
	}
}

func (g *Governor) newTicket() string {
	return g.prefix + "-" + strconv.FormatUint(g.tickets.Add(1), 36)
}

// now reads the governor's clock (see engine.clock).
func (g *Governor) now() time.Time {
	n, _ := g.mem.clock()
	return n
}

// reportStoreError hands an error that cannot be returned to OnStoreError.
func (g *Governor) reportStoreError(err error) {
	if err != nil && g.onStoreError != nil {
		g.onStoreError(storeErr(err))
	}
}
