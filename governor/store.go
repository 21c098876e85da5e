package governor

import (
	"context"
	"time"
)

// Store holds the state of keys for a Governor that is given one in
// Config.Store, so that several processes can share limits (a Redis store).
// The Governor keeps the Policy, jitter, blocking and contexts; the Store
// keeps, per key: held slots, the two token buckets, quota counts, the send
// window check, suspension, adapted limits and the FIFO queue of waiters.
// Without a Config.Store the Governor uses its own in-memory state directly
// (not through this interface); NewMemoryStore returns that same state
// behind this interface, as the reference implementation.
//
// Every method decides at the time it is given (Request.Now, now), never by
// reading a clock of its own, so that tests drive it with explicit times. A
// shared store may offer a mode that uses a common clock (Redis TIME) to
// avoid skew between processes, but must honour the given times by default.
//
// A Store must be safe for concurrent use. What it must guarantee:
//
//  1. All-or-nothing: Reserve commits everything the request takes on every
//     key, or nothing on any key. No interleaving of concurrent calls may
//     expose a partial reservation (a Redis store runs one script).
//  2. Checks, per key, in Reserve at req.Now (each with the Limits given in
//     req.Limits for that key; zero values mean no limit, as documented on
//     Limits):
//     suspension: suspended until T > Now blocks, RetryAt T;
//     send window: Limits.Window closed at Now blocks, RetryAt its next opening;
//     for KindSlot: held slots >= the effective concurrency blocks, RetryAt
//     unknown (zero); the effective concurrency is min(MaxConcurrency,
//     floor(adapted)), at least 1; then a ConnectionRate token;
//     for KindEvent: a used-up Quota blocks, RetryAt when a unit frees up
//     (calendar: the end of the period, see Quota.Period; rolling: when the
//     oldest counted event leaves the window); a granted event counts once,
//     stamped at its Start for rolling windows; then a Rate token.
//     FIFO: while other tickets wait on a key (were refused and have neither
//     been granted nor cancelled), a request with another ticket is refused
//     on that key with LimitQueue (RetryAt zero), except that the oldest
//     waiting ticket of the key may proceed.
//  3. Tokens: token buckets are GCRA/x-time-rate buckets with nanosecond
//     precision: capacity Burst (0 means 1), refilled at Rate (lowered by a
//     RateLimited signal in force). When every other check passes and the
//     tokens of some key only come at a later time T, the request is granted
//     with Start = the latest such T, taking the tokens ahead (they go
//     negative), unless req.Try is set or req.Deadline is non-zero and T is
//     after it: then nothing is taken and the request is refused with
//     RetryAt T and the key and limit (LimitRate or LimitConnectionRate).
//  4. When refused, Grant.Decision names the key and limit with the latest
//     known RetryAt, or any key whose RetryAt is unknown (zero) in preference
//     to known ones; a refused non-Try request joins the FIFO queue of that
//     key under req.Ticket (the same ticket keeps its place if it was
//     already queued there, and leaves any other key's queue), except when
//     refused for tokens due after req.Deadline (LimitRate,
//     LimitConnectionRate): the caller gives up, so it leaves every queue.
//     Grant.Wake, if not nil, must receive or be closed when something
//     changes that may let the request succeed before RetryAt (a slot
//     released, a resume, a ticket ahead leaving the queue, an increase of
//     concurrency); the Governor also retries at RetryAt, every second if
//     Wake is nil and RetryAt is zero, at once when SetPolicy replaces the
//     policy (the retry carries the new Limits), and in any case at least
//     every 5 seconds: a lost wake-up delays a waiter, it does not hang it.
//     Wake is still what makes hand-overs prompt; the 5-second re-check is
//     a safety net, not a substitute.
//  5. Granted KindSlot requests hold one slot on each key under req.Ticket
//     until Release. A store may lease slots (expire them if the holder dies)
//     but must then renew them while held; that is the store's business.
//  6. Cancel undoes a granted request, given the same Request (Ticket, Keys,
//     Limits) with Now set to the time of the Cancel, and the Grant that
//     Reserve returned, unchanged (its Token included). It comes before
//     Start, for a request that was not used (its context ended), and, for
//     KindEvent, at any time after Start too, for an event that was granted
//     and then did not happen (Reservation.Cancel). On every key, with the
//     key's limits in force: its slot is freed (KindSlot); its token is
//     returned to the bucket (GCRA: the theoretical arrival time moves back
//     by one emission interval, not before Now); a rolling-quota unit, the
//     one stamped at the grant's Start, is removed if still in the window; a
//     calendar-quota unit is given back only if the period it was counted in
//     is still the current one at Now: never into a later period's count. A
//     second Cancel of a granted ticket gives back nothing more (a store
//     remembers a cancelled ticket at least for the idle timeout, so that a
//     Cancel retried after a lost reply is harmless). For a request that was
//     refused and is waiting, Cancel (given the zero Grant) removes its
//     ticket from the queues. Cancel of an unknown ticket is a no-op.
//  7. Release frees the slots req.Ticket holds on req.Keys. Release of a
//     ticket that holds nothing is a no-op (the Governor releases once, but a
//     store must be idempotent).
//  8. Feedback applies a Signal to a key exactly as documented on Adaptive and
//     SignalKind (the in-memory store is the reference); Suspend and Resume
//     set and clear a suspension; Snapshot returns the keys it holds state
//     for, each with the fields of KeyState it can fill (Limits is filled by
//     the Governor).
//  9. Keys that are quiescent for longer than the idle timeout may be
//     forgotten (adapted state included): the Governor does not rely on
//     anything surviving that.
//
// Store methods return an error only when the store itself fails (network,
// server); the Governor wraps it with ErrStore.
type Store interface {
	Reserve(ctx context.Context, req *Request) (Grant, error)
	Cancel(ctx context.Context, req *Request, g Grant) error
	Release(ctx context.Context, req *Request) error
	Feedback(ctx context.Context, now time.Time, key string, lim Limits, s Signal) error
	Suspend(ctx context.Context, now time.Time, key string, until time.Time, reason string) error
	Resume(ctx context.Context, now time.Time, key string) error
	Snapshot(ctx context.Context, now time.Time) ([]KeyState, error)
}

// Request is one all-or-nothing acquisition, as the Governor hands it to a
// Store. The Governor reuses the same *Request, with the same Ticket, across
// the retries of one waiting call, and for its Cancel and Release.
type Request struct {
	Kind   Kind
	Keys   []string // sorted ascending, distinct, non-empty
	Limits []Limits // Limits[i] is the policy's Limits for Keys[i]
	Now    time.Time

	// Deadline, when not zero, is the latest acceptable Start: a grant whose
	// tokens come later is refused instead (nothing taken).
	Deadline time.Time

	// Try marks a non-blocking attempt: grant only if Start would be Now, and
	// never join a queue.
	Try bool

	// Ticket identifies the request, unique across every process sharing the
	// store (Config.Tickets prefixes it). It names the waiter in queues and
	// the holder of slots.
	Ticket string
}

// Grant is a Store's answer to Reserve.
type Grant struct {
	OK bool
	// Start is when the work may start (>= Now; later when tokens were taken
	// ahead). Set when OK.
	Start time.Time
	// Decision, when not OK, says which key and limit refused it and RetryAt.
	Decision Decision
	// Wake, when not OK and not nil, signals a change worth a retry (contract 4).
	Wake <-chan struct{}
	// Token is optional, opaque store data about a granted request, for the
	// store's own Cancel: the Governor hands the Grant back to Cancel
	// unchanged, Token included (contract 6). A store can put there what
	// identifies the units the grant took: the exact stamp of its
	// rolling-quota units when it stamps them by its own clock (Redis TIME),
	// the time it counted the calendar-quota units at, to tell on Cancel
	// whether that count is still the current one (MemoryStore puts that).
	// "" is valid for stores that need nothing.
	Token string
}
