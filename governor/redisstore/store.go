package redisstore

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicemail/sluice/governor"
	"golang.org/x/time/rate"
)

//go:embed store.lua
var scriptSrc string

// script is every operation of the store: loaded once per server, run with
// EVALSHA (go-redis falls back to EVAL when the server lost it).
var script = redis.NewScript(scriptSrc)

// Sentinel errors.
var (
	// ErrUnavailable: Redis could not be reached or is not serving
	// (connection refused or lost, timeout, LOADING, READONLY...). With
	// FailClosed, every Store method fails with an error wrapping it (and the
	// cause); the Governor wraps it again with governor.ErrStore.
	ErrUnavailable = errors.New("redisstore: redis unavailable")
	// ErrInvalidOptions: New was given invalid Options.
	ErrInvalidOptions = errors.New("redisstore: invalid options")
	// ErrInvalidRequest: a Request breaks the Store contract (keys not
	// sorted, distinct and non-empty, or Limits of another length).
	ErrInvalidRequest = errors.New("redisstore: invalid request")
	// ErrClosed: Reserve after Close (nothing would wake a waiter). Release
	// and Cancel still work after Close.
	ErrClosed = errors.New("redisstore: store closed")
)

// Mode is what the store does while Redis is unreachable.
type Mode uint8

const (
	// FailClosed (the default) fails every call with an error wrapping
	// ErrUnavailable: nothing is granted that the fleet's limits might not
	// allow.
	FailClosed Mode = iota
	// Degrade serves calls from an in-memory store with every limit divided
	// by Options.Processes (at least 1), so the fleet stays near its limits
	// without Redis, and goes back to Redis by itself when it answers again.
	Degrade
)

func (m Mode) String() string {
	switch m {
	case FailClosed:
		return "fail-closed"
	case Degrade:
		return "degrade"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Documented defaults of Options.
const (
	DefaultPrefix     = "sluice"
	DefaultLease      = 30 * time.Second
	DefaultProbeEvery = time.Second
	DefaultTimeout    = 2 * time.Second
)

// Options configures a Store. Zero values are the documented defaults.
type Options struct {
	// Prefix names every Redis key of the store: "{Prefix}:...". The braces
	// make Prefix the Redis Cluster hash tag, so all keys of one store live
	// in one slot and any set of keys is acquired by one script. "":
	// DefaultPrefix ("sluice"). It must not contain '{' or '}'. Stores with
	// different prefixes share nothing.
	Prefix string

	// Lease is how long a held slot (and a waiter's place in a queue)
	// survives its process: the store renews it every RenewEvery while held,
	// so only a crashed or partitioned holder loses it. 0: DefaultLease (30s).
	Lease time.Duration

	// RenewEvery is how often leases are renewed. 0: Lease/3.
	RenewEvery time.Duration

	// ServerTime makes decisions on Redis's clock (TIME) instead of the
	// times the Governor passes, for fleets whose clocks disagree. Times in
	// results are converted back to the caller's clock by offset.
	// Send windows and calendar quota boundaries are still computed from the
	// caller's time (they need time zones), so skew moves them slightly.
	ServerTime bool

	// Unavailable is what happens while Redis is unreachable: FailClosed
	// (the zero value) or Degrade.
	Unavailable Mode

	// Processes is the number of processes sharing the limits; with Degrade
	// each one enforces limit/Processes (at least 1) on its own while Redis
	// is unreachable. Required (> 0) with Degrade.
	Processes int

	// ProbeEvery is how often an unreachable Redis is probed (PING) to
	// notice that it came back. 0: DefaultProbeEvery (1s).
	ProbeEvery time.Duration

	// Timeout bounds each call to Redis (the caller's context is not used
	// to cut a script short, so that a grant is never lost in flight).
	// 0: DefaultTimeout (2s).
	Timeout time.Duration

	// IdleTimeout is how long the state of a quiescent key stays in Redis
	// (it also stays while any time in it, such as a suspension, is ahead).
	// 0: governor.DefaultIdleTimeout; negative: forever.
	IdleTimeout time.Duration

	// Logger receives the transitions between reachable and unreachable
	// Redis (Warn and Info). nil: no logging.
	Logger *slog.Logger
}

// Store is a governor.Store on Redis shared by every process that uses the
// same Redis and Prefix. It is safe for concurrent use. Close it to stop its
// lease renewal and its subscription.
type Store struct {
	rdb   redis.UniversalClient
	opt   Options
	owner string // this store's id: its wake channel is chanPre+owner
	pre   string // "{prefix}:"
	reg   string // key registry
	chPre string

	local *governor.MemoryStore // Degrade
	down  atomic.Bool

	mu       sync.Mutex
	holders  map[string]*holder
	waiters  map[string]*waiter
	renewing bool
	fix      []*holder // released while a renewal was in flight
	pending  []pendingOp

	ps       *redis.PubSub
	done     chan struct{}
	closed   sync.Once
	isClosed atomic.Bool
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

var _ governor.Store = (*Store)(nil)

type holder struct {
	ticket string
	keys   []string
	local  bool
}

type waiter struct {
	ch    chan struct{}
	keys  []string
	qkey  string // the key whose queue holds it
	local bool
}

// pendingOp is a clean-up that could not reach Redis: drop a ticket's
// holds and queue places on keys.
type pendingOp struct {
	ticket string
	keys   []string
}

const maxPending = 10000

// New returns a Store on rdb (a *redis.Client, *redis.ClusterClient or
// *redis.Ring with all the store's keys on one node). It does not wait for
// Redis: a background goroutine subscribes to the store's wake channel,
// and calls reach Redis when they are made.
func New(rdb redis.UniversalClient, opt Options) (*Store, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOptions)
	}
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	switch {
	case strings.ContainsAny(opt.Prefix, "{}"):
		return nil, fmt.Errorf("%w: Prefix %q contains a brace", ErrInvalidOptions, opt.Prefix)
	case opt.Lease < 0 || opt.RenewEvery < 0 || opt.ProbeEvery < 0 || opt.Timeout < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidOptions)
	case opt.Unavailable > Degrade:
		return nil, fmt.Errorf("%w: unknown Mode %d", ErrInvalidOptions, opt.Unavailable)
	case opt.Unavailable == Degrade && opt.Processes <= 0:
		return nil, fmt.Errorf("%w: Degrade needs Processes > 0", ErrInvalidOptions)
	case opt.Processes < 0:
		return nil, fmt.Errorf("%w: negative Processes", ErrInvalidOptions)
	}
	if opt.Lease == 0 {
		opt.Lease = DefaultLease
	}
	if opt.Lease < time.Millisecond {
		return nil, fmt.Errorf("%w: Lease %v under 1ms", ErrInvalidOptions, opt.Lease)
	}
	if opt.RenewEvery == 0 {
		opt.RenewEvery = opt.Lease / 3
	}
	if opt.RenewEvery >= opt.Lease {
		return nil, fmt.Errorf("%w: RenewEvery %v must be shorter than Lease %v", ErrInvalidOptions, opt.RenewEvery, opt.Lease)
	}
	if opt.ProbeEvery == 0 {
		opt.ProbeEvery = DefaultProbeEvery
	}
	if opt.Timeout == 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.IdleTimeout == 0 {
		opt.IdleTimeout = governor.DefaultIdleTimeout
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	s := &Store{
		rdb:     rdb,
		opt:     opt,
		owner:   hex.EncodeToString(id[:]),
		pre:     "{" + opt.Prefix + "}:",
		holders: make(map[string]*holder),
		waiters: make(map[string]*waiter),
		done:    make(chan struct{}),
	}
	s.reg = s.pre + "keys"
	s.chPre = s.pre + "wake:"
	if opt.Unavailable == Degrade {
		s.local = governor.NewMemoryStore(opt.IdleTimeout)
	}
	// no channel yet: subscribing dials, which the listener does
	s.ps = rdb.Subscribe(context.Background())
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.listen()
	go s.loop()
	return s, nil
}

// Close stops lease renewal and the wake-up subscription. Slots still held
// come back to the fleet when their lease ends unless released: Release,
// Cancel, Feedback, Suspend, Resume and Snapshot still work after Close;
// Reserve fails with ErrClosed (blocked waiters are woken to see it).
// Close does not close the Redis client.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		s.isClosed.Store(true)
		s.cancel()
		close(s.done)
		err = s.ps.Close()
		s.wg.Wait()
		s.wakeAll() // blocked waiters retry and get ErrClosed
	})
	return err
}

func (s *Store) listen() {
	defer s.wg.Done()
	// go-redis keeps the channel and subscribes again after a failure
	_ = s.ps.Subscribe(s.ctx, s.chPre+s.owner)
	if s.ctx.Err() != nil {
		return
	}
	msgs := s.ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(5 * time.Second))
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			s.wake(m.Payload)
		case *redis.Subscription:
			// (re)subscribed: wake-ups may have been missed meanwhile
			if m.Kind == "subscribe" {
				s.wakeAll()
			}
		}
	}
}

func (s *Store) wake(ticket string) {
	s.mu.Lock()
	w := s.waiters[ticket]
	s.mu.Unlock()
	if w != nil && w.ch != nil {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func (s *Store) wakeAll() {
	s.mu.Lock()
	for _, w := range s.waiters {
		if w.ch != nil {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
	s.mu.Unlock()
}

// loop renews leases, retries clean-ups and probes an unreachable Redis.
func (s *Store) loop() {
	defer s.wg.Done()
	renew := time.NewTicker(s.opt.RenewEvery)
	defer renew.Stop()
	probe := time.NewTicker(s.opt.ProbeEvery)
	defer probe.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-renew.C:
			if !s.down.Load() {
				s.renew()
			}
		case <-probe.C:
			if s.down.Load() {
				s.probe()
			}
		}
	}
}

func (s *Store) probe() {
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.Timeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return
	}
	s.markUp()
	s.renew()
}

func (s *Store) markDown(err error) {
	if s.down.CompareAndSwap(false, true) {
		if s.opt.Logger != nil {
			s.opt.Logger.Warn("redisstore: redis unreachable", "prefix", s.opt.Prefix, "mode", s.opt.Unavailable.String(), "err", err)
		}
		// waiters blocked on a Redis queue retry: they fail (FailClosed)
		// or go on locally (Degrade) instead of waiting for a lost wake-up
		s.wakeAll()
	}
}

func (s *Store) markUp() {
	if s.down.CompareAndSwap(true, false) {
		if s.opt.Logger != nil {
			s.opt.Logger.Info("redisstore: redis reachable again", "prefix", s.opt.Prefix, "mode", s.opt.Unavailable.String())
		}
		// waiters served locally meanwhile move back to Redis on their retry
		s.wakeAll()
	}
}

// Degraded reports whether Redis is currently considered unreachable (with
// Degrade, calls are then served by the local store).
func (s *Store) Degraded() bool { return s.down.Load() }

func (s *Store) useLocal() bool { return s.local != nil && s.down.Load() }

// unavailable reports whether err means that Redis is not serving.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY"} {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return true
}

// run runs the script. The caller's context is not used to cut it short
// (a grant committed by Redis must not be lost); Options.Timeout bounds it.
func (s *Store) run(ctx context.Context, keys []string, args []any) (any, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.Timeout)
	defer cancel()
	res, err := script.Run(ctx, s.rdb, keys, args...).Result()
	if err != nil {
		if unavailable(err) {
			s.markDown(err)
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	if s.down.Load() && s.local == nil {
		s.markUp()
	}
	return res, nil
}

// redisKeys returns the registry and the five Redis keys of each key.
func (s *Store) redisKeys(keys []string) []string {
	out := make([]string, 0, 1+5*len(keys))
	out = append(out, s.reg)
	for _, k := range keys {
		out = append(out, s.pre+"s:"+k, s.pre+"h:"+k, s.pre+"q:"+k, s.pre+"x:"+k, s.pre+"r:"+k)
	}
	return out
}

// cancelKeys is redisKeys and, last, the sorted set of cancelled event
// tickets (a repeated Cancel of a granted event gives back nothing more).
func (s *Store) cancelKeys(keys []string) []string {
	return append(s.redisKeys(keys), s.pre+"cancelled")
}

// rememberMs is how long a cancelled event's ticket is remembered: the idle
// timeout, or governor.DefaultIdleTimeout when keys never expire.
func (s *Store) rememberMs() int64 {
	if s.opt.IdleTimeout > 0 {
		return max(s.opt.IdleTimeout.Milliseconds(), 1)
	}
	return governor.DefaultIdleTimeout.Milliseconds()
}

// localToken prefixes the Token of an event granted by the local store
// (Degrade), so that its Cancel goes there even after Redis came back.
const localToken = "local:"

// args returns the common arguments of the script for n keys at now.
func (s *Store) args(op string, now time.Time, n, extra int) []any {
	a := make([]any, 0, 8+extra)
	sec, nsec := "", ""
	if !s.opt.ServerTime {
		sec, nsec = strconv.FormatInt(now.Unix(), 10), strconv.Itoa(now.Nanosecond())
	}
	idle := int64(-1)
	if s.opt.IdleTimeout > 0 {
		idle = s.opt.IdleTimeout.Milliseconds()
	}
	return append(a, op, sec, nsec, s.opt.Lease.Milliseconds(), idle, s.owner, s.chPre, n)
}

func offset(t, now time.Time) string { return strconv.FormatInt(int64(t.Sub(now)), 10) }

func checkRequest(req *governor.Request) error {
	if req == nil {
		return fmt.Errorf("%w: nil", ErrInvalidRequest)
	}
	if len(req.Limits) != len(req.Keys) || len(req.Keys) == 0 {
		return fmt.Errorf("%w: %d keys, %d limits", ErrInvalidRequest, len(req.Keys), len(req.Limits))
	}
	for i, k := range req.Keys {
		if k == "" || (i > 0 && req.Keys[i-1] >= k) {
			return fmt.Errorf("%w: keys must be non-empty, sorted and distinct", ErrInvalidRequest)
		}
	}
	if req.Kind != governor.KindSlot && req.Kind != governor.KindEvent {
		return fmt.Errorf("%w: kind %v", ErrInvalidRequest, req.Kind)
	}
	return nil
}

// Reserve implements governor.Store: one script run (one round trip).
func (s *Store) Reserve(ctx context.Context, req *governor.Request) (governor.Grant, error) {
	if err := checkRequest(req); err != nil {
		return governor.Grant{}, err
	}
	if s.isClosed.Load() {
		return governor.Grant{}, ErrClosed
	}
	if s.useLocal() {
		return s.reserveLocal(ctx, req)
	}
	qkey := ""
	s.mu.Lock()
	w := s.waiters[req.Ticket]
	wasLocal := w != nil && w.local
	if wasLocal {
		w = nil // it waited locally while Redis was away: leave that queue
	}
	if w != nil {
		qkey = w.qkey
	} else if !req.Try {
		// registered before the script runs: a wake-up published between
		// the script and our reading its reply must not be lost
		w = &waiter{ch: make(chan struct{}, 1), keys: req.Keys}
		s.waiters[req.Ticket] = w
	} else if wasLocal {
		delete(s.waiters, req.Ticket)
	}
	s.mu.Unlock()
	if wasLocal {
		_ = s.local.Cancel(ctx, s.localRequest(req), governor.Grant{})
	}
	kind := "1"
	if req.Kind == governor.KindEvent {
		kind = "2"
	}
	try, deadline := "0", ""
	if req.Try {
		try = "1"
	}
	if !req.Deadline.IsZero() {
		deadline = offset(req.Deadline, req.Now)
	}
	a := s.args("reserve", req.Now, len(req.Keys), 5+4*len(req.Keys))
	a = append(a, kind, req.Ticket, try, deadline, qkey)
	for i, k := range req.Keys {
		l := req.Limits[i]
		a = append(a, k, encodeLimits(l), windowArg(l.Window, req.Now), quotaEndArg(l.Quota, req.Now))
	}
	res, err := s.run(ctx, s.redisKeys(req.Keys), a)
	if err != nil {
		// the script may have run before the reply was lost
		s.addPending(req.Ticket, req.Keys)
		s.mu.Lock()
		delete(s.waiters, req.Ticket)
		s.mu.Unlock()
		if s.local != nil && errors.Is(err, ErrUnavailable) {
			return s.reserveLocal(ctx, req)
		}
		return governor.Grant{}, err
	}
	r, ok := res.([]any)
	if !ok || len(r) != 5 {
		return governor.Grant{}, fmt.Errorf("redisstore: unexpected reply %v", res)
	}
	granted, _ := r[0].(int64)
	off, _ := strconv.ParseInt(str(r[1]), 10, 64)
	idx, _ := r[2].(int64)
	lim, _ := r[3].(int64)
	if idx >= int64(len(req.Keys)) {
		return governor.Grant{}, fmt.Errorf("redisstore: unexpected reply %v", res)
	}
	if granted == 1 {
		g := governor.Grant{OK: true, Start: req.Now.Add(time.Duration(off)), Token: str(r[4])}
		if idx >= 0 {
			g.Decision = governor.Decision{OK: true, Start: g.Start, Key: req.Keys[idx], Limit: governor.LimitKind(lim)}
		}
		s.mu.Lock()
		delete(s.waiters, req.Ticket)
		if req.Kind == governor.KindSlot {
			s.holders[req.Ticket] = &holder{ticket: req.Ticket, keys: req.Keys}
		}
		s.mu.Unlock()
		return g, nil
	}
	if idx < 0 {
		return governor.Grant{}, fmt.Errorf("redisstore: unexpected reply %v", res)
	}
	d := governor.Decision{Key: req.Keys[idx], Limit: governor.LimitKind(lim), Reason: str(r[4])}
	if off != -1 {
		d.RetryAt = req.Now.Add(time.Duration(off))
	}
	if req.Try || d.Limit == governor.LimitRate || d.Limit == governor.LimitConnectionRate {
		// not queued (the script left every queue)
		if w != nil {
			s.mu.Lock()
			if s.waiters[req.Ticket] == w {
				delete(s.waiters, req.Ticket)
			}
			s.mu.Unlock()
		}
		return governor.Grant{Decision: d}, nil
	}
	s.mu.Lock()
	if s.waiters[req.Ticket] != w {
		// cancelled meanwhile: the Governor will not wait on it
		s.mu.Unlock()
		return governor.Grant{Decision: d}, nil
	}
	w.qkey = d.Key
	s.mu.Unlock()
	return governor.Grant{Decision: d, Wake: w.ch}, nil
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

// localRequest is req with its limits divided by Processes.
func (s *Store) localRequest(req *governor.Request) *governor.Request {
	lr := *req
	lr.Limits = make([]governor.Limits, len(req.Limits))
	for i, l := range req.Limits {
		lr.Limits[i] = scaleLimits(l, s.opt.Processes)
	}
	return &lr
}

func (s *Store) reserveLocal(ctx context.Context, req *governor.Request) (governor.Grant, error) {
	s.mu.Lock()
	if w := s.waiters[req.Ticket]; w != nil && !w.local {
		// it waited in Redis: its place there lapses with its lease
		delete(s.waiters, req.Ticket)
	}
	s.mu.Unlock()
	g, err := s.local.Reserve(ctx, s.localRequest(req))
	if err != nil {
		return g, err
	}
	if g.OK {
		g.Token = localToken + g.Token // its Cancel goes to the local store
	}
	s.mu.Lock()
	switch {
	case g.OK:
		delete(s.waiters, req.Ticket)
		if req.Kind == governor.KindSlot {
			s.holders[req.Ticket] = &holder{ticket: req.Ticket, keys: req.Keys, local: true}
		}
	case !req.Try:
		s.waiters[req.Ticket] = &waiter{keys: req.Keys, local: true}
	}
	s.mu.Unlock()
	return g, nil
}

// Cancel implements governor.Store.
func (s *Store) Cancel(ctx context.Context, req *governor.Request, g governor.Grant) error {
	if req == nil {
		return fmt.Errorf("%w: nil", ErrInvalidRequest)
	}
	s.mu.Lock()
	w := s.waiters[req.Ticket]
	delete(s.waiters, req.Ticket)
	h := s.holders[req.Ticket]
	delete(s.holders, req.Ticket)
	if h != nil && !h.local && s.renewing {
		s.fix = append(s.fix, h)
	}
	s.mu.Unlock()
	local := (w != nil && w.local) || (h != nil && h.local) || (w == nil && h == nil && s.useLocal())
	if g.OK && req.Kind == governor.KindEvent {
		// events hold nothing: the token tells where the grant was made
		local = strings.HasPrefix(g.Token, localToken)
	}
	if local {
		if s.local != nil {
			g.Token = strings.TrimPrefix(g.Token, localToken)
			return s.local.Cancel(ctx, s.localRequest(req), g)
		}
		return nil
	}
	if !g.OK && w == nil {
		return nil
	}
	if g.OK && req.Kind == governor.KindSlot && h == nil {
		return nil // released already
	}
	if err := checkRequest(req); err != nil {
		return err
	}
	kind, undo := "1", "0"
	if req.Kind == governor.KindEvent {
		kind = "2"
	}
	if g.OK {
		undo = "1"
	}
	counted, stamp, _ := strings.Cut(g.Token, " ")
	if stamp == "" {
		counted = "" // not a token of this store: the script goes by g.Start
	}
	a := s.args("cancel", req.Now, len(req.Keys), 7+2*len(req.Keys))
	a = append(a, kind, req.Ticket, undo, offset(g.Start, req.Now), counted, stamp, s.rememberMs())
	for i, k := range req.Keys {
		a = append(a, k, encodeLimits(req.Limits[i]))
	}
	if _, err := s.run(ctx, s.cancelKeys(req.Keys), a); err != nil {
		s.addPending(req.Ticket, req.Keys)
		return err
	}
	return nil
}

// Release implements governor.Store.
func (s *Store) Release(ctx context.Context, req *governor.Request) error {
	if req == nil {
		return fmt.Errorf("%w: nil", ErrInvalidRequest)
	}
	s.mu.Lock()
	h := s.holders[req.Ticket]
	delete(s.holders, req.Ticket)
	if h != nil && !h.local && s.renewing {
		s.fix = append(s.fix, h)
	}
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	if h.local {
		return s.local.Release(ctx, s.localRequest(req))
	}
	return s.release(ctx, req.Now, h.ticket, h.keys)
}

func (s *Store) release(ctx context.Context, now time.Time, ticket string, keys []string) error {
	a := s.args("release", now, len(keys), 1+2*len(keys))
	a = append(a, ticket)
	for _, k := range keys {
		a = append(a, k, "")
	}
	if _, err := s.run(ctx, s.redisKeys(keys), a); err != nil {
		s.addPending(ticket, keys)
		return err
	}
	return nil
}

func (s *Store) addPending(ticket string, keys []string) {
	s.mu.Lock()
	if len(s.pending) >= maxPending {
		// their leases end them anyway
		s.pending = s.pending[1:]
	}
	s.pending = append(s.pending, pendingOp{ticket: ticket, keys: keys})
	s.mu.Unlock()
}

// Feedback implements governor.Store.
func (s *Store) Feedback(ctx context.Context, now time.Time, key string, lim governor.Limits, sig governor.Signal) error {
	if key == "" {
		return governor.ErrInvalidKey
	}
	if s.useLocal() {
		return s.local.Feedback(ctx, now, key, scaleLimits(lim, s.opt.Processes), sig)
	}
	started := sig.Started
	if started.IsZero() {
		started = now
	}
	a := s.args("feedback", now, 1, 5)
	a = append(a, key, encodeLimits(lim), strconv.Itoa(int(sig.Kind)), offset(started, now), sig.Reason)
	_, err := s.run(ctx, s.redisKeys([]string{key}), a)
	if err != nil && s.local != nil && errors.Is(err, ErrUnavailable) {
		return s.local.Feedback(ctx, now, key, scaleLimits(lim, s.opt.Processes), sig)
	}
	return err
}

// Suspend implements governor.Store.
func (s *Store) Suspend(ctx context.Context, now time.Time, key string, until time.Time, reason string) error {
	if key == "" {
		return governor.ErrInvalidKey
	}
	return s.suspension(ctx, "suspend", now, key, until, reason)
}

// Resume implements governor.Store.
func (s *Store) Resume(ctx context.Context, now time.Time, key string) error {
	if key == "" {
		return governor.ErrInvalidKey
	}
	return s.suspension(ctx, "resume", now, key, time.Time{}, "")
}

func (s *Store) suspension(ctx context.Context, op string, now time.Time, key string, until time.Time, reason string) error {
	localDo := func() error {
		if op == "resume" {
			return s.local.Resume(ctx, now, key)
		}
		return s.local.Suspend(ctx, now, key, until, reason)
	}
	if s.useLocal() {
		return localDo()
	}
	u := "0"
	if op == "suspend" {
		u = offset(until, now)
	}
	a := s.args(op, now, 1, 4)
	a = append(a, key, "", u, reason)
	_, err := s.run(ctx, s.redisKeys([]string{key}), a)
	if err != nil && s.local != nil && errors.Is(err, ErrUnavailable) {
		return localDo()
	}
	return err
}

// snapshotBatch is how many keys one snapshot script reads.
const snapshotBatch = 256

// Snapshot implements governor.Store: two round trips per 256 keys. While
// degraded it returns the local store's keys.
func (s *Store) Snapshot(ctx context.Context, now time.Time) ([]governor.KeyState, error) {
	if s.useLocal() {
		return s.local.Snapshot(ctx, now)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.Timeout)
	names, err := s.rdb.ZRange(cctx, s.reg, 0, -1).Result()
	cancel()
	if err != nil {
		if unavailable(err) {
			s.markDown(err)
			if s.local != nil {
				return s.local.Snapshot(ctx, now)
			}
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	// ZRANGE sorts by score; the contract wants keys sorted
	slices.Sort(names)
	var out []governor.KeyState
	for len(names) > 0 {
		batch := names[:min(len(names), snapshotBatch)]
		names = names[len(batch):]
		a := s.args("snapshot", now, len(batch), len(batch))
		for _, k := range batch {
			a = append(a, k)
		}
		res, err := s.run(ctx, s.redisKeys(batch), a)
		if err != nil {
			return nil, err
		}
		rows, _ := res.([]any)
		for _, row := range rows {
			f, _ := row.([]any)
			if len(f) != 16 {
				return nil, fmt.Errorf("redisstore: unexpected snapshot row %v", row)
			}
			out = append(out, keyState(f, now))
		}
	}
	return out, nil
}

func keyState(f []any, now time.Time) governor.KeyState {
	n := func(i int) int64 {
		v, _ := strconv.ParseInt(str(f[i]), 10, 64)
		return v
	}
	at := func(i int) time.Time {
		if str(f[i]) == "" {
			return time.Time{}
		}
		return now.Add(time.Duration(n(i)))
	}
	ks := governor.KeyState{
		Key: str(f[0]), InFlight: int(n(1)), Waiting: int(n(2)), Concurrency: int(n(3)),
		QuotaUsed: int(n(11)), QuotaResets: at(12), SuspendedUntil: at(13),
		LastReason: str(f[14]), LastUsed: at(15),
	}
	if iv := n(4); iv > 0 {
		ks.Rate = rateOf(iv)
		ks.Tokens = float64(n(5)) - float64(max(n(6), 0))/float64(iv)
	}
	if iv := n(7); iv > 0 {
		ks.ConnectionRate = rateOf(iv)
		ks.ConnectionTokens = float64(n(8)) - float64(max(n(9), 0))/float64(iv)
	}
	return ks
}

// renew renews the leases of this store's holders and waiters, and runs
// the clean-ups that could not reach Redis before.
func (s *Store) renew() {
	s.mu.Lock()
	type entry struct{ ty, ticket string }
	byKey := make(map[string][]entry)
	for t, h := range s.holders {
		if !h.local {
			for _, k := range h.keys {
				byKey[k] = append(byKey[k], entry{"h", t})
			}
		}
	}
	for t, w := range s.waiters {
		if !w.local && w.qkey != "" {
			byKey[w.qkey] = append(byKey[w.qkey], entry{"w", t})
		}
	}
	pending := s.pending
	s.pending = nil
	s.renewing = true
	s.mu.Unlock()

	ctx := context.Background()
	now := time.Now()
	var err error
	if len(byKey) > 0 {
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		a := s.args("renew", now, len(keys), 0)
		for _, k := range keys {
			es := byKey[k]
			a = append(a, k, len(es))
			for _, e := range es {
				a = append(a, e.ty, e.ticket)
			}
		}
		var res any
		res, err = s.run(ctx, s.redisKeys(keys), a)
		// waiters whose place lapsed retry (and queue again)
		lost, _ := res.([]any)
		for _, t := range lost {
			s.wake(str(t))
		}
	}
	s.mu.Lock()
	s.renewing = false
	fix := s.fix
	s.fix = nil
	s.mu.Unlock()
	// a slot released while the renewal was in flight may have been
	// registered again by it: release it again
	for _, h := range fix {
		_ = s.release(ctx, now, h.ticket, h.keys)
	}
	if err != nil {
		s.mu.Lock()
		s.pending = append(pending, s.pending...)
		s.mu.Unlock()
		return
	}
	for i, p := range pending {
		a := s.args("cancel", now, len(p.keys), 7+2*len(p.keys))
		a = append(a, "1", p.ticket, "2", "0", "", "", s.rememberMs())
		for _, k := range p.keys {
			a = append(a, k, "")
		}
		if _, err := s.run(ctx, s.cancelKeys(p.keys), a); err != nil {
			s.mu.Lock()
			s.pending = append(pending[i:], s.pending...)
			s.mu.Unlock()
			return
		}
	}
}

func rateOf(iv int64) rate.Limit { return rate.Limit(1e9 / float64(iv)) }
