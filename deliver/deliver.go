package deliver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemail/sluice/backoff"
	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/smtpcode"
)

// Status is what became of one recipient.
type Status uint8

const (
	// Delivered: the receiver accepted the message for the recipient
	// (250 after the final dot).
	Delivered Status = iota + 1
	// Deferred: not delivered yet; try again at Result.RetryAt.
	Deferred
	// Bounced: permanently refused (or expired): do not retry.
	Bounced
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Bounced:
		return "bounced"
	}
	return "Status(?)"
}

// Result is the outcome for one recipient.
type Result struct {
	Recipient string
	Status    Status
	// Reply is the reply that decided (the last one received for this
	// recipient), zero when there was none (a network error, a wait that
	// gave up). LocalReply is set when deliver made it up in the words other
	// MTAs use: null MX (556 5.1.10), unknown domain (550 5.1.2), DNS
	// failure (451 4.4.3), TLS unavailable (454 4.7.10), no SMTPUTF8
	// (553 5.6.7), too big for the receiver's SIZE (552 5.3.4).
	Reply      smtpcode.Reply
	LocalReply bool
	// Class is Reply's classification, or the error's when there is no reply.
	Class smtpcode.Classification
	// Err is the error behind a Deferred or Bounced status (an
	// *smtp.SMTPError, a network error, a context error, a
	// *governor.WaitError, a *backoff.GiveUpError for an expired message).
	Err error
	// RetryAt is when to try a Deferred recipient again (backoff policy,
	// server hints, or when a governor limit lifts).
	RetryAt time.Time
	// PossiblyDelivered is set on a Deferred recipient whose connection was
	// lost after the final dot, before the receiver's reply: the receiver
	// may have taken it, and a retry may deliver it twice.
	PossiblyDelivered bool
	// Site and Host are the recipient's site key and the last host tried.
	Site, Host string
	// Attempts counts the SMTP connections or transactions tried for this
	// recipient within this Send.
	Attempts int
}

// Sender delivers messages. It is safe for concurrent use by many
// goroutines; create one per process (it owns the connection pool and,
// unless given one, the governor) and Close it when done.
type Sender struct {
	cfg         Config
	timeouts    Timeouts
	helloName   string
	dial        func(ctx context.Context, network, addr string, source netip.Addr) (net.Conn, error)
	router      *router
	lim         limiter
	pool        *pool
	learn       learner
	sharedSites map[string]bool
	keys        sync.Map // poolKey → []string, the connection keys
	nkeys       atomic.Int64
	backoff     *backoff.Policy
	maxPerConn  int
	maxConnAge  time.Duration
	idleTimeout time.Duration
	maxWait     time.Duration
	maxAttempts int
	maxBytes    int64

	base       context.Context // cancelled when Close gives up waiting
	cancelBase context.CancelFunc
	aborted    atomic.Bool // set just before base is cancelled

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	bg       sync.WaitGroup
}

// New returns a Sender for cfg. It fails only on an invalid Config.
func New(cfg Config) (*Sender, error) {
	s := &Sender{
		cfg:         cfg,
		timeouts:    cfg.Timeouts.withDefaults(),
		helloName:   cfg.HelloName,
		maxPerConn:  cmp.Or(cfg.MaxMessagesPerConn, DefaultMaxMessagesPerConn),
		maxConnAge:  cmp.Or(cfg.MaxConnAge, DefaultMaxConnAge),
		idleTimeout: cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout),
		maxWait:     cmp.Or(cfg.MaxWait, DefaultMaxWait),
		maxAttempts: cmp.Or(cfg.MaxAttempts, DefaultMaxAttempts),
		maxBytes:    cmp.Or(cfg.MaxMessageBytes, DefaultMaxMessageBytes),
		backoff:     cfg.Backoff,
	}
	shared := cfg.SharedSites
	if shared == nil {
		shared = []string{SiteGoogle}
	}
	s.sharedSites = make(map[string]bool, len(shared))
	for _, site := range shared {
		s.sharedSites[site] = true
	}
	if s.maxPerConn < 0 {
		s.maxPerConn = 1
	}
	if s.maxAttempts < 0 {
		return nil, fmt.Errorf("deliver: MaxAttempts %d is negative", cfg.MaxAttempts)
	}
	if cfg.TLS > TLSNone {
		return nil, fmt.Errorf("deliver: unknown TLS policy %d", cfg.TLS)
	}
	if sh := cfg.Smarthost; sh != nil && sh.Addr == "" {
		return nil, errors.New("deliver: Smarthost.Addr is empty")
	}
	if s.helloName == "" {
		h, err := os.Hostname()
		if err != nil || validateDomain(h) != nil {
			h = "localhost" // as go-smtp and net/smtp
		}
		s.helloName = h
	} else if err := validateDomain(s.helloName); err != nil {
		return nil, fmt.Errorf("deliver: HelloName %q: %v", s.helloName, err)
	}
	s.dial = cfg.Dial
	if s.dial == nil {
		s.dial = defaultDial(s.timeouts.Connect)
	}
	lim, err := newLimiter(cfg)
	if err != nil {
		return nil, err
	}
	s.lim = lim
	s.router = newRouter(&cfg)
	s.pool = newPool(s)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	return s, nil
}

// Close stops the Sender: Send returns ErrClosed from now on, in-flight
// Sends finish (when ctx ends first, they are cancelled: their
// recipients come back Deferred), pooled connections get QUIT and are
// closed, and every governor slot is released. It returns ctx's error if
// it had to cancel. Calling Close again is a no-op.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	var err error
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.abort()
		<-done
	}
	stop := context.AfterFunc(ctx, s.abort)
	s.pool.drain()
	s.bg.Wait()
	stop()
	s.abort()
	return err
}

// abort cancels what is still running: Sends in flight (sendCtx), their
// connections (each is registered on base) and pooled connections' QUIT.
func (s *Sender) abort() {
	s.aborted.Store(true)
	s.cancelBase()
}

func (s *Sender) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

// Send delivers msg and returns one Result per msg.To entry, in order.
// It returns an error, and no results, only when nothing was attempted:
// msg is invalid (the error wraps ErrInvalidAddress, ErrNoRecipients,
// ErrInvalidMessage or ErrMessageTooLarge) or the Sender is closed
// (ErrClosed). Otherwise every recipient is Delivered, Deferred or Bounced;
// a cancelled ctx makes the unfinished ones Deferred.
func (s *Sender) Send(ctx context.Context, msg *Message) ([]Result, error) {
	st, ctx, err := s.begin(ctx, msg)
	if err != nil {
		return nil, err
	}
	defer st.end()
	p := st.p

	// The caller's keys (mailbox, tenant) count once per message, unless
	// it is not sent after all (giveBackKeys).
	if len(p.keys) > 0 {
		wctx := s.newWaitCtx(ctx)
		o, retryAt := st.takeKeys(wctx)
		wctx.stop()
		if o != nil {
			for i := range st.res {
				st.finish(i, o, retryAt)
			}
			return st.results(msg), nil
		}
	}

	// Group by domain, keeping first-seen order; through a smarthost every
	// recipient goes in one transaction.
	if s.cfg.Smarthost != nil || sameDomain(p.rcpts) {
		all := make([]int, len(p.rcpts))
		for i := range all {
			all[i] = i
		}
		st.deliverDomain(ctx, p.rcpts[0].domain, all)
		return st.results(msg), nil
	}
	var order []string
	groups := map[string][]int{}
	for i, r := range p.rcpts {
		g := r.domain
		if s.cfg.Smarthost != nil {
			g = p.rcpts[0].domain
		}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], i)
	}
	if len(order) == 1 {
		st.deliverDomain(ctx, order[0], groups[order[0]])
	} else {
		var wg sync.WaitGroup
		ctx := ctx // never reassigned: captured by value, Send's ctx stays on the stack
		for _, d := range order {
			wg.Go(func() { st.deliverDomain(ctx, d, groups[d]) })
		}
		wg.Wait()
	}
	return st.results(msg), nil
}

func sameDomain(rcpts []rcpt) bool {
	for _, r := range rcpts[1:] {
		if r.domain != rcpts[0].domain {
			return false
		}
	}
	return true
}

// sendState is one Send in progress. Each domain's goroutine writes only
// its own recipients' entries of res.
type sendState struct {
	s     *Sender
	p     *prepared
	src   netip.Addr
	first time.Time
	res   []Result
	// started is when Send began; MaxWait counts from it.
	started time.Time
	ctx     *sendCtx
	// keys is the message's unit on Message.Keys, given back by
	// giveBackKeys when the message is not sent.
	keys *governor.Reservation
}

// sendCtx is a Send's context: the caller's, done too when Close gives up
// waiting. It builds a cancellable context (registered on the Sender's
// base) only when something needs its Done channel: a wait, a dial, a DNS
// lookup. A Send that takes a pooled connection and waits for nothing
// costs no context of its own; its connection is registered on base
// instead, once for its whole life (dialSession).
type sendCtx struct {
	context.Context // the caller's
	s               *Sender
	once            sync.Once
	built           atomic.Bool // inner, cancel and stop are set
	inner           context.Context
	cancel          context.CancelFunc
	stop            func() bool
}

func (c *sendCtx) build() context.Context {
	c.once.Do(func() {
		c.inner, c.cancel = context.WithCancel(c.Context)
		c.stop = context.AfterFunc(c.s.base, c.cancel)
		c.built.Store(true)
	})
	return c.inner
}

func (c *sendCtx) Done() <-chan struct{} { return c.build().Done() }

// Err is the caller's error, or context.Canceled once Close gave up; it
// builds nothing.
func (c *sendCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if c.s.aborted.Load() {
		return context.Canceled
	}
	return nil
}

// Value answers from the built context when there is one, so that
// contexts derived from c find its cancellation (context's fast path).
func (c *sendCtx) Value(key any) any {
	if c.built.Load() {
		return c.inner.Value(key)
	}
	return c.Context.Value(key)
}

// release undoes build, if it ran; the Send is over.
func (c *sendCtx) release() {
	if c.built.Load() {
		c.stop()
		c.cancel()
	}
}

// takeKeys takes the message's unit on the caller's keys (Message.Keys),
// keeping the reservation for giveBackKeys. It returns nil, or the outcome
// and retry-at of a wait that gave up.
func (st *sendState) takeKeys(ctx context.Context) (*outcome, time.Time) {
	s := st.s
	r, dec, err := s.lim.takeReservation(ctx, st.p.keys)
	if s.cfg.Hooks.Wait != nil && (err != nil || dec.Waited > 0) {
		s.cfg.Hooks.Wait(WaitInfo{Keys: st.p.keys, Decision: dec, Err: err})
	}
	if err != nil {
		return &outcome{err: err, class: smtpcode.ClassifyError(err)}, dec.RetryAt
	}
	st.keys = r
	return nil, time.Time{}
}

// giveBackKeys gives the caller's keys their unit back when the message
// was not sent: every recipient Deferred, none possibly delivered. Its
// retry takes the unit again, so a quota counts messages sent, not tries.
// A message with a recipient delivered or bounced keeps its unit.
func (st *sendState) giveBackKeys() {
	if st.keys == nil {
		return
	}
	for i := range st.res {
		if st.res[i].Status != Deferred || st.res[i].PossiblyDelivered {
			return
		}
	}
	if err := st.keys.Cancel(); err != nil && st.s.cfg.Logger != nil {
		st.s.cfg.Logger.LogAttrs(context.Background(), slog.LevelWarn, "deliver: giving back the message's keys failed",
			slog.Any("keys", st.p.keys), slog.Any("err", err))
	}
}

// begin admits one Send or SendNetSMTP call: it counts the call in flight
// (so Close waits for it), validates msg, and returns the call's state and
// a context that Close cancels when it gives up waiting. On success the
// caller must call st.end when it returns; on error nothing is held.
func (s *Sender) begin(ctx context.Context, msg *Message) (*sendState, context.Context, error) {
	if !s.enter() {
		return nil, nil, ErrClosed
	}
	p, err := msg.prepare(s.maxBytes)
	if err != nil {
		s.inflight.Done()
		return nil, nil, err
	}
	now := time.Now()
	st := &sendState{
		s:       s,
		p:       p,
		src:     cmp.Or(p.sourceIP, s.cfg.SourceIP),
		first:   p.firstTime,
		res:     make([]Result, len(p.rcpts)),
		started: now,
		ctx:     &sendCtx{Context: ctx, s: s},
	}
	if st.first.IsZero() {
		st.first = now
	}
	for i, r := range p.rcpts {
		st.res[i].Recipient = r.addr
	}
	return st, st.ctx, nil
}

// end releases what begin took.
func (st *sendState) end() {
	st.ctx.release()
	st.s.inflight.Done()
}

func (st *sendState) results(msg *Message) []Result {
	for i := range st.res {
		if st.res[i].Status == 0 {
			// Not reachable by design; if a path is ever missed, the
			// recipient is still accounted for, and retried.
			st.finish(i, &outcome{err: errNotAttempted, class: smtpcode.ClassifyError(errNotAttempted)}, time.Time{})
		}
	}
	st.giveBackKeys()
	// With no duplicate recipients, Message.To and st.res are in the same
	// order and st.res (not used after this) is the answer: one
	// allocation less per Send.
	out := st.res
	if len(msg.To) != len(st.res) {
		out = make([]Result, len(msg.To))
	} else {
		for i, j := range st.p.index {
			if i != j {
				out = make([]Result, len(msg.To))
				break
			}
		}
	}
	for i, j := range st.p.index {
		out[i] = st.res[j]
		out[i].Recipient = msg.To[i]
	}
	for _, r := range out {
		if st.s.cfg.Hooks.Result != nil {
			st.s.cfg.Hooks.Result(r)
		}
		if st.s.cfg.Logger != nil {
			st.s.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "deliver: result",
				slog.String("rcpt", r.Recipient), slog.String("status", r.Status.String()),
				slog.String("site", r.Site), slog.String("host", r.Host),
				slog.String("reply", r.Reply.String()), slog.String("category", r.Class.Category.String()),
				slog.Time("retry_at", r.RetryAt), slog.Bool("possibly_delivered", r.PossiblyDelivered),
				slog.Any("err", r.Err))
		}
	}
	return out
}

// finish sets the final result of recipient i from o. retryAt, when not
// zero, is a governor's "not before" for a message that was not attempted.
func (st *sendState) finish(i int, o *outcome, retryAt time.Time) {
	r := &st.res[i]
	r.Reply, r.LocalReply, r.Class, r.Err = o.reply, o.local, o.class, o.err
	now := time.Now()
	if !o.class.Transient && !isContextErr(o.err) && !isWaitErr(o.err) {
		r.Status = Bounced
		return
	}
	r.Status = Deferred
	var d backoff.Decision
	var err error
	if r.Attempts == 0 {
		// Never attempted (a governor limit, a cancelled ctx): not an attempt.
		wait := time.Duration(0)
		if !retryAt.IsZero() {
			wait = retryAt.Sub(now)
		}
		d, err = st.s.backoff.Postpone(wait, st.first, now)
	} else {
		d, err = st.s.backoff.NextAttempt(o.class, st.p.attempt+1, st.first, now, nil)
	}
	var give *backoff.GiveUpError
	switch {
	case errors.As(err, &give) && errors.Is(err, backoff.ErrMaxAge):
		r.Status = Bounced
		give.Err = o.err
		r.Err = give
	case err != nil:
		r.RetryAt = now
	default:
		r.RetryAt = d.At
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func isWaitErr(err error) bool {
	var we *governor.WaitError
	return errors.As(err, &we)
}

// MaxRecipientsPerTransaction is the most RCPT commands deliver sends in
// one transaction: the 100 recipients RFC 5321 4.5.3.1.8 requires every
// server to accept. More recipients of one domain go in further
// transactions, on the same connection when it can be reused.
const MaxRecipientsPerTransaction = 100

// Governor keys. "ip:any" stands for "whatever address the system picks".
func ipKey(src netip.Addr) string {
	if !src.IsValid() {
		return "ip:any"
	}
	return "ip:" + src.String()
}

func connKeys(src netip.Addr, site string) []string {
	ip := ipKey(src)
	return []string{ip, "site:" + site, ip + "|site:" + site}
}

// keysFor returns connKeys, cached: the slice is shared and read-only.
func (s *Sender) keysFor(k poolKey) []string {
	if v, ok := s.keys.Load(k); ok {
		return v.([]string)
	}
	keys := connKeys(k.src, k.site)
	if s.nkeys.Add(1) <= maxCachedKeys {
		s.keys.Store(k, keys)
	}
	return keys
}

// maxCachedKeys bounds the key cache (one entry per source IP and site).
const maxCachedKeys = 10000

// deliverDomain delivers to the recipients idx of one domain.
func (st *sendState) deliverDomain(ctx context.Context, domain string, idx []int) {
	s := st.s
	rt := s.router.lookup(ctx, domain)
	for _, i := range idx {
		st.res[i].Site = rt.site
	}
	if rt.fail != nil {
		var o *outcome
		if ctx.Err() != nil {
			o = s.errOutcome(ctx, ctx.Err())
		} else {
			lo := s.localOutcome(rt.fail.reply, rt.fail.err)
			o = &lo
		}
		for _, i := range idx {
			if o.class.Transient && ctx.Err() == nil {
				// A failed lookup is a failed attempt: the backoff applies.
				st.res[i].Attempts = 1
			}
			st.finish(i, o, time.Time{})
		}
		return
	}

	waitCtx := s.newWaitCtx(ctx)
	defer waitCtx.stop()
	keys := s.keysFor(poolKey{st.src, rt.site})
	pairKey := keys[2]
	pending := idx
	last := make(map[int]*outcome, len(idx))
	var lastAny *outcome
	hostStart := 0
	var notBefore time.Time
	attempts := 0

	// finishPending ends every pending recipient: with o, or with its own
	// last outcome when o is nil.
	finishPending := func(o *outcome, retryAt time.Time) {
		for _, i := range pending {
			oi := o
			if oi == nil {
				oi = last[i]
			}
			if oi == nil {
				// Never tried itself (a 452 "too many recipients" left it
				// for a next transaction that did not happen): it shares
				// the fate of the transaction's other recipients.
				oi = lastAny
			}
			if oi == nil {
				oi = &outcome{err: errNotAttempted, class: smtpcode.ClassifyError(errNotAttempted)}
			}
			st.finish(i, oi, retryAt)
		}
		pending = nil
	}

	for len(pending) > 0 {
		if attempts >= s.maxAttempts {
			finishPending(nil, time.Time{})
			return
		}
		if ctx.Err() != nil {
			finishPending(s.errOutcome(ctx, ctx.Err()), time.Time{})
			return
		}
		// Each transaction takes a message token on the site's keys.
		if o, retryAt := s.learnedRateWait(ctx, waitCtx, poolKey{st.src, rt.site}); o != nil {
			if attempts > 0 {
				o = nil
			}
			finishPending(o, retryAt)
			return
		}
		if o, retryAt := s.take(waitCtx, rt.site, keys); o != nil {
			if attempts > 0 {
				o = nil
			}
			finishPending(o, retryAt)
			return
		}
		ss, o, retryAt := s.getSession(ctx, waitCtx, rt, st.src, hostStart, notBefore)
		if ss == nil {
			if isWaitErr(o.err) || (isContextErr(o.err) && !o.hasReply()) {
				// Not an attempt: a limit or the caller's ctx stopped it.
				// After earlier attempts their replies say more than the wait.
				if attempts > 0 && ctx.Err() == nil {
					o = nil
				}
				finishPending(o, retryAt)
				return
			}
			attempts++
			lastAny = o
			for _, i := range pending {
				last[i] = o
				st.res[i].Attempts++
			}
			if !st.retryable(o) {
				finishPending(o, time.Time{})
				return
			}
			notBefore = st.retryTime(o, attempts)
			if st.tooLate(ctx, notBefore, poolKey{st.src, rt.site}, o) {
				finishPending(nil, time.Time{})
				return
			}
			if o.class.Category != smtpcode.Congestion && o.class.Category != smtpcode.RateLimit {
				hostStart++
			}
			continue
		}

		start := time.Now()
		batch, rest := pending, []int(nil)
		if len(batch) > MaxRecipientsPerTransaction {
			batch, rest = pending[:MaxRecipientsPerTransaction], pending[MaxRecipientsPerTransaction:]
		}
		rcpts := make([]int, len(batch))
		for j, i := range batch {
			rcpts[j] = i
			st.res[i].Host = ss.host.name
		}
		res, lastOut := ss.transaction(ctx, st.p, rcpts)
		accepted := 0
		pending = rest
		retryConn := false
		for j, r := range res {
			i := batch[j]
			if r.notTried {
				pending = append(pending, i)
				continue
			}
			st.res[i].Attempts++
			if r.delivered {
				accepted++
				st.res[i].Status = Delivered
				st.res[i].Reply = lastOut.reply
				st.res[i].Class = lastOut.class
				continue
			}
			o := r.out
			last[i] = &o
			lastAny = &o
			if r.possiblyDelivered {
				st.finish(i, &o, time.Time{})
				st.res[i].PossiblyDelivered = true
				if st.res[i].Status == Bounced {
					st.res[i].Status = Deferred
					st.res[i].RetryAt = time.Now()
				}
				continue
			}
			if st.retryable(&o) && connectionLevel(&o) && ctx.Err() == nil {
				pending = append(pending, i)
				retryConn = true
				continue
			}
			st.finish(i, &o, time.Time{})
		}
		if !ss.exhausted {
			s.feedbackTransaction(ss, pairKey, lastOut, accepted, start)
			if accepted > 0 {
				s.learn.delivered(poolKey{st.src, rt.site}, time.Now())
			}
		}
		if s.cfg.Hooks.Attempt != nil {
			s.cfg.Hooks.Attempt(AttemptInfo{Site: rt.site, Host: ss.host.name, SourceIP: st.src,
				Recipients: len(batch), Accepted: accepted, Reply: lastOut.reply, Class: lastOut.class,
				Err: lastOut.err, Duration: time.Since(start)})
		}
		if s.cfg.Logger != nil {
			s.log(ctx, "attempt", "site", rt.site, "host", ss.host.name, "rcpts", len(batch), "accepted", accepted, "reply", lastOut.reply.String(), "err", lastOut.err)
		}
		s.release(ss)
		if retryConn {
			attempts++
			notBefore = st.retryTime(&lastOut, attempts)
			if st.tooLate(ctx, notBefore, poolKey{st.src, rt.site}, &lastOut) {
				finishPending(nil, time.Time{})
				return
			}
		}
	}
}

// waitContext bounds governor waits by MaxWait. The context is built
// only when a wait needs it: a Send that waits for nothing (a pooled
// connection, tokens at hand) sets no timer.
func (s *Sender) waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	l := s.newWaitCtx(ctx)
	return l, l.stop
}

// newWaitCtx is waitContext for callers that call stop themselves (a
// method call, not a returned closure: one allocation less per Send).
func (s *Sender) newWaitCtx(ctx context.Context) *lazyCtx {
	l := &lazyCtx{parent: ctx}
	if s.maxWait > 0 {
		l.deadline = time.Now().Add(s.maxWait)
	}
	return l
}

// lazyCtx is ctx with an optional earlier deadline, created on first use.
// Deadline needs no context; Done, Err and Value build it.
type lazyCtx struct {
	parent   context.Context
	deadline time.Time // zero: none
	once     sync.Once
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	stopped  bool
}

func (l *lazyCtx) init() context.Context {
	l.once.Do(func() {
		var ctx context.Context
		var cancel context.CancelFunc
		if l.deadline.IsZero() {
			ctx, cancel = context.WithCancel(l.parent)
		} else {
			ctx, cancel = context.WithDeadline(l.parent, l.deadline)
		}
		l.mu.Lock()
		l.ctx, l.cancel = ctx, cancel
		stopped := l.stopped
		l.mu.Unlock()
		if stopped {
			cancel()
		}
	})
	return l.ctx
}

// stop releases the context's resources, if it was built.
func (l *lazyCtx) stop() {
	l.mu.Lock()
	l.stopped = true
	cancel := l.cancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (l *lazyCtx) Deadline() (time.Time, bool) {
	d, ok := l.parent.Deadline()
	if !l.deadline.IsZero() && (!ok || l.deadline.Before(d)) {
		return l.deadline, true
	}
	return d, ok
}

func (l *lazyCtx) Done() <-chan struct{} { return l.init().Done() }
func (l *lazyCtx) Value(key any) any     { return l.init().Value(key) }

// Err needs no context either until one is built: the governor's blocking
// Take checks it on every message token.
func (l *lazyCtx) Err() error {
	l.mu.Lock()
	ctx, stopped := l.ctx, l.stopped
	l.mu.Unlock()
	switch {
	case ctx != nil:
		return ctx.Err()
	case l.parent.Err() != nil:
		return l.parent.Err()
	case stopped:
		return context.Canceled
	case !l.deadline.IsZero() && !time.Now().Before(l.deadline):
		return context.DeadlineExceeded
	}
	return nil
}

// tooLate reports whether waiting until notBefore for a new connection
// would outlast MaxWait or ctx, with no open connection that could come
// back sooner (after a congestion refusal an idle connection may be reused
// at once; after a rate limit the receiver asked for less, not another
// connection).
func (st *sendState) tooLate(ctx context.Context, notBefore time.Time, k poolKey, o *outcome) bool {
	if notBefore.IsZero() {
		return false
	}
	limit, ok := ctx.Deadline()
	if st.s.maxWait > 0 {
		if w := st.started.Add(st.s.maxWait); !ok || w.Before(limit) {
			limit, ok = w, true
		}
	}
	if !ok || !notBefore.After(limit) {
		return false
	}
	return o.class.Category != smtpcode.Congestion || st.s.learn.live(k) == 0
}

// retryable: a transient outcome worth another connection within Send.
func (st *sendState) retryable(o *outcome) bool {
	return o.class.Transient && !isContextErr(o.err)
}

// connectionLevel: the outcome concerns the connection, not this recipient.
func connectionLevel(o *outcome) bool {
	return o.class.Scope == smtpcode.ScopeConnection || o.class.Category == smtpcode.Network ||
		o.class.Category == smtpcode.Congestion
}

// retryTime is when a new connection may be opened after o: at once for a
// network failure (another host is tried), after the backoff delay for a
// congestion or rate reply (an existing connection may be reused sooner).
func (st *sendState) retryTime(o *outcome, attempts int) time.Time {
	switch o.class.Category {
	case smtpcode.Congestion, smtpcode.RateLimit:
		now := time.Now()
		d, err := st.s.backoff.NextAttempt(o.class, attempts, now, now, nil)
		if err != nil {
			return now
		}
		return d.At
	}
	return time.Time{}
}

// release returns ss to the pool or closes it.
func (s *Sender) release(ss *session) {
	s.pool.put(ss)
}

// getSession returns a session for rt: an idle pooled one, or a new one
// under a governor slot, trying the route's hosts in order from hostStart.
// New connections are not opened before notBefore (an idle one is taken
// at once). On failure it returns the outcome and, for a wait that gave
// up, when to retry.
func (s *Sender) getSession(ctx, waitCtx context.Context, rt *route, src netip.Addr, hostStart int, notBefore time.Time) (*session, *outcome, time.Time) {
	k := poolKey{src, rt.site}
	keys := s.keysFor(k)
	for {
		ss, w := s.pool.takeOrWait(k, rt)
		if ss != nil {
			return ss, nil, time.Time{}
		}
		sig := w.ch // a session handed over, or a learned limit to look at again
		// handed ends the wait; a session handed over meanwhile is used,
		// or put back when the wait gave up.
		handed := func(retrying, gaveUp bool) *session {
			ss := s.pool.leave(k, w, retrying)
			if ss != nil && gaveUp {
				s.pool.put(ss)
				return nil
			}
			return ss
		}
		if now := time.Now(); now.Before(notBefore) {
			t := time.NewTimer(notBefore.Sub(now))
			gaveUp := false
			select {
			case <-sig:
			case <-t.C:
			case <-waitCtx.Done():
				gaveUp = true
			}
			t.Stop()
			if ss := handed(!gaveUp, gaveUp); ss != nil {
				return ss, nil, time.Time{}
			}
			if gaveUp {
				return nil, s.errOutcome(ctx, waitCtx.Err()), notBefore
			}
			continue
		}
		if full, graceEnd := s.learn.full(k); full {
			// A learned limit: wait for a connection to come back or close.
			s.pool.heldByLearned(w)
			ok := waitLearned(sig, graceEnd, waitCtx.Done())
			if ss := handed(ok, !ok); ss != nil {
				return ss, nil, time.Time{}
			}
			if !ok {
				return nil, s.errOutcome(ctx, waitCtx.Err()), time.Time{}
			}
			continue
		}
		s.pool.evictOthers(k, rt)
		p, dec, err := s.lim.acquire(waitCtx, keys, func(cancel context.CancelCauseFunc) { s.pool.waitingInGovernor(w, cancel) })
		woken := errors.Is(err, errWoken)
		if ss := handed(woken, err != nil && !woken); ss != nil {
			if p != nil {
				p.Release() // the session brings its own slot
			}
			return ss, nil, time.Time{}
		}
		if s.cfg.Hooks.Wait != nil && (err != nil || dec.Waited > 0) && !woken {
			s.cfg.Hooks.Wait(WaitInfo{Site: rt.site, Keys: keys, Decision: dec, Err: err})
		}
		if err != nil {
			if woken {
				continue
			}
			o := &outcome{err: err, class: smtpcode.ClassifyError(err)}
			if ctx.Err() != nil {
				o = s.errOutcome(ctx, ctx.Err())
			}
			return nil, o, dec.RetryAt
		}
		// The learned limit is reserved only now, with the slot held: while
		// this call waited in the governor, the receiver may have refused a
		// connection and taught a limit that is already reached.
		if ok, _ := s.learn.reserve(k); !ok {
			p.Release()
			continue // to wait for the learned limit, in the queue again
		}
		if dec.Waited > 0 && s.cfg.Logger != nil {
			s.log(ctx, "waited", "site", rt.site, "decision", dec.String())
		}
		var last *outcome
		for i := range rt.hosts {
			h := rt.hosts[(hostStart+i)%len(rt.hosts)]
			ss, o := s.dialSession(ctx, rt, h, src, p, false)
			if ss == nil && errors.Is(o.err, errHandshake) && s.cfg.TLS == TLSOpportunistic && ctx.Err() == nil {
				// Opportunistic TLS is no reason not to deliver: once more
				// in clear, as Postfix does at its "may" level.
				ss, o = s.dialSession(ctx, rt, h, src, p, true)
			}
			if ss != nil {
				s.learn.dialed(k, true, false)
				s.lim.feedback(keys[2], governor.Signal{Kind: governor.Success, Started: p.Acquired()})
				return ss, nil, time.Time{}
			}
			last = o
			s.feedbackConnect(k, p, o)
			// The next MX is tried after a network failure or a refusal
			// (even a 5xx one: Postfix's smtp_skip_5xx_greeting), but not
			// after a throttle of the whole site.
			if ctx.Err() != nil || siteThrottled(o) {
				break
			}
		}
		s.learn.dialed(k, false, last.class.Category == smtpcode.Congestion && last.hasReply())
		p.Release()
		s.pool.wake(k) // a dial slot is free again
		return nil, last, time.Time{}
	}
}

// waitLearned waits, under a learned limit, for sig (a connection came
// back or closed) or graceEnd (a closing connection stops counting; zero:
// never); false when done closes first.
func waitLearned(sig <-chan struct{}, graceEnd time.Time, done <-chan struct{}) bool {
	var graceC <-chan time.Time
	if !graceEnd.IsZero() {
		t := time.NewTimer(time.Until(graceEnd))
		defer t.Stop() // once per wait, not once per getSession loop
		graceC = t.C
	}
	select {
	case <-sig:
	case <-graceC:
	case <-done:
		return false
	}
	return true
}

// siteThrottled reports whether o is a throttle of the sending IP by the
// whole site (Gmail's 421 4.4.5, a rate limit, Yahoo's [TSS04]): the next
// MX of the site would say the same, and each refusal costs reputation, so
// it is not tried. Other greeting failures (a plain 421, 4.3.2, network
// errors) move on to the next MX, as RFC 5321 5.1 and Postfix do.
func siteThrottled(o *outcome) bool {
	switch o.class.Category {
	case smtpcode.RateLimit, smtpcode.Reputation:
		return o.class.Transient
	case smtpcode.Congestion:
		return o.reply.Enhanced == smtpcode.EnhancedCode{Class: 4, Subject: 4, Detail: 5}
	}
	return false
}

// feedbackConnect tells the governor how a connection attempt failed.
func (s *Sender) feedbackConnect(k poolKey, p permit, o *outcome) {
	key := s.keysFor(k)[2]
	sig := governor.Signal{Started: p.Acquired(), Reason: o.reply.String()}
	switch o.class.Category {
	case smtpcode.Congestion:
		sig.Kind = governor.Congestion
	case smtpcode.RateLimit, smtpcode.Reputation:
		// Yahoo's [TSS04] and Microsoft's 4.7.650 are rate limits by
		// reputation: slow down as for a rate limit.
		if !o.class.Transient {
			return
		}
		sig.Kind = governor.RateLimited
		s.learn.rateLimited(k, p.Acquired())
	default:
		if isContextErr(o.err) || o.local || (o.hasReply() && !o.class.Transient) {
			return
		}
		sig.Kind = governor.Failure
		if sig.Reason == "" && o.err != nil {
			sig.Reason = o.err.Error()
		}
	}
	s.lim.feedback(key, sig)
}

// feedbackTransaction tells the governor how a transaction went.
// start is when the transaction began.
func (s *Sender) feedbackTransaction(ss *session, key string, last outcome, accepted int, start time.Time) {
	started := ss.permit.Acquired()
	switch {
	case accepted > 0:
		s.lim.feedback(key, governor.Signal{Kind: governor.Success, Started: started})
	case last.class.Category == smtpcode.Congestion:
		s.lim.feedback(key, governor.Signal{Kind: governor.Congestion, Started: started, Reason: last.reply.String()})
	case (last.class.Category == smtpcode.RateLimit || last.class.Category == smtpcode.Reputation) && last.class.Transient &&
		(last.class.Scope == smtpcode.ScopeConnection || last.class.Scope == smtpcode.ScopeSession):
		s.lim.feedback(key, governor.Signal{Kind: governor.RateLimited, Started: started, Reason: last.reply.String()})
		if ss.site != "" {
			s.learn.rateLimited(poolKey{ss.sourceIP, ss.site}, start)
		}
	}
	// A connection lost mid-transaction is not reported as a Failure: as
	// in Postfix, only failures to connect or to complete the handshake
	// count toward the cohort that suspends a site (feedbackConnect).
}

// learnedRateWait waits for the rate learned from k's rate-limit replies,
// if one is in force. A wait that would outlast waitCtx is not made: it
// returns a *governor.WaitError (not an attempt) and when to retry.
func (s *Sender) learnedRateWait(ctx, waitCtx context.Context, k poolKey) (*outcome, time.Time) {
	lim := s.learn.rateLimiter(k)
	if lim == nil {
		return nil, time.Time{}
	}
	now := time.Now()
	r := lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil, time.Time{}
	}
	at := now.Add(d)
	dec := governor.Decision{RetryAt: at, Key: connKeys(k.src, k.site)[2], Limit: governor.LimitRate, Reason: "rate learned from the receiver's rate-limit replies"}
	if dl, ok := waitCtx.Deadline(); ok && at.After(dl) {
		r.CancelAt(now)
		err := &governor.WaitError{Decision: dec, Err: context.DeadlineExceeded}
		return &outcome{err: err, class: smtpcode.ClassifyError(err)}, at
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		if s.cfg.Hooks.Wait != nil {
			dec.OK, dec.Start, dec.Waited = true, time.Now(), d
			s.cfg.Hooks.Wait(WaitInfo{Site: k.site, Keys: []string{dec.Key}, Decision: dec})
		}
		return nil, time.Time{}
	case <-waitCtx.Done():
		r.Cancel()
		if ctx.Err() != nil {
			return s.errOutcome(ctx, ctx.Err()), at
		}
		err := &governor.WaitError{Decision: dec, Err: waitCtx.Err()}
		return &outcome{err: err, class: smtpcode.ClassifyError(err)}, at
	}
}

// take takes one message token on keys, waiting at most as long as ctx
// allows. It returns nil, or the outcome and retry-at of a wait that gave up.
func (s *Sender) take(ctx context.Context, site string, keys []string) (*outcome, time.Time) {
	dec, err := s.lim.take(ctx, keys)
	if s.cfg.Hooks.Wait != nil && (err != nil || dec.Waited > 0) {
		s.cfg.Hooks.Wait(WaitInfo{Site: site, Keys: keys, Decision: dec, Err: err})
	}
	if err == nil {
		return nil, time.Time{}
	}
	return &outcome{err: err, class: smtpcode.ClassifyError(err)}, dec.RetryAt
}

func (s *Sender) log(ctx context.Context, msg string, args ...any) {
	if s.cfg.Logger == nil {
		return
	}
	s.cfg.Logger.Log(ctx, slog.LevelDebug, "deliver: "+msg, args...)
}
