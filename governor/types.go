package governor

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Sentinel errors. Errors returned by the package wrap one of them (or a
// context error) so that errors.Is works.
var (
	// ErrInvalidKey: a key is empty.
	ErrInvalidKey = errors.New("governor: invalid key")
	// ErrInvalidPolicy: a Policy or Limits value is invalid; see *PolicyError.
	ErrInvalidPolicy = errors.New("governor: invalid policy")
	// ErrStore: the Store failed; the store's error is wrapped too.
	ErrStore = errors.New("governor: store failed")
)

var (
	errEmptyKey     = errors.New("empty key")
	errEmptyPattern = errors.New("empty pattern")
)

// PolicyError says which part of a Policy is invalid.
type PolicyError struct {
	Where string // "Default", `Keys["ip:1.2.3.4"]`, `Patterns[0] "ip:*"`
	Err   error
}

func (e *PolicyError) Error() string {
	return "governor: invalid policy: " + e.Where + ": " + e.Err.Error()
}

// Unwrap returns ErrInvalidPolicy and the cause.
func (e *PolicyError) Unwrap() []error { return []error{ErrInvalidPolicy, e.Err} }

// WaitError is returned by a blocking Acquire or Take that gave up: its
// context was done, or the wait would end after the context's deadline (then
// it fails at once, and errors.Is(err, context.DeadlineExceeded) holds,
// unlike rate.Limiter.Wait). Nothing is held or taken when it is returned.
type WaitError struct {
	Decision Decision // what it was waiting for, and until when if known
	Err      error    // ctx.Err(), or context.DeadlineExceeded
}

func (e *WaitError) Error() string {
	return "governor: " + e.Err.Error() + " while waiting: " + e.Decision.String()
}

func (e *WaitError) Unwrap() error { return e.Err }

// LimitKind names the limit that decided a wait.
type LimitKind uint8

// Limit kinds, as reported in a Decision.
const (
	LimitNone           LimitKind = iota // nothing held it up
	LimitConcurrency                     // all slots of the key were held
	LimitQueue                           // earlier waiters on the key go first (FIFO)
	LimitRate                            // the key's event token bucket
	LimitConnectionRate                  // the key's connection token bucket
	LimitQuota                           // the key's quota for the window is used up
	LimitWindow                          // outside the key's send window
	LimitSuspended                       // the key is suspended
	LimitJitter                          // the random spreading delay
)

var limitNames = [...]string{"none", "concurrency", "queue", "rate", "connection rate", "quota", "send window", "suspended", "jitter"}

func (k LimitKind) String() string {
	if int(k) < len(limitNames) {
		return limitNames[k]
	}
	return "LimitKind(" + strconv.Itoa(int(k)) + ")"
}

// Decision explains the outcome of an Acquire or Take (or their Try forms):
// whether it is granted, when work may start, and which key and limit held it
// up the longest. It is meant to be logged.
type Decision struct {
	OK bool // granted

	// Start is when the work may start: the grant time, or later when a rate
	// token was reserved ahead or jitter applies. Blocking forms return at Start.
	Start time.Time

	// Waited is how long the blocking form waited in total (zero for Try forms).
	Waited time.Duration

	// RetryAt is, when not OK, the earliest time a retry could succeed, if
	// known (time limits: rate, quota, window, suspension); zero when it
	// depends on others releasing slots.
	RetryAt time.Time

	Key    string    // the key that held it up ("" if none)
	Limit  LimitKind // which limit of Key
	Reason string    // for LimitSuspended, the suspension's reason
}

// String describes the decision in one line.
func (d Decision) String() string {
	var b strings.Builder
	if d.OK {
		b.WriteString("granted")
		if d.Waited > 0 {
			b.WriteString(" after ")
			b.WriteString(d.Waited.String())
		}
	} else {
		b.WriteString("not granted")
		if !d.RetryAt.IsZero() {
			b.WriteString(", retry at ")
			b.WriteString(d.RetryAt.Format(time.RFC3339Nano))
		}
	}
	if d.Limit != LimitNone {
		b.WriteString(" (")
		b.WriteString(d.Limit.String())
		if d.Key != "" {
			b.WriteString(" of ")
			b.WriteString(d.Key)
		}
		if d.Reason != "" {
			b.WriteString(": ")
			b.WriteString(d.Reason)
		}
		b.WriteString(")")
	}
	return b.String()
}

// SignalKind is what a receiver's reply means for a key.
type SignalKind uint8

// Signal kinds.
const (
	// Success: the work went through (a delivery accepted, a connection
	// greeted). It grows the effective concurrency additively and ends a
	// failure run.
	Success SignalKind = iota + 1
	// Congestion: too many concurrent connections (Gmail 421 4.4.5). It
	// shrinks the effective concurrency multiplicatively, once per failure run.
	// Keys without MaxConcurrency have nothing to shrink and only record it.
	Congestion
	// RateLimited: too fast (Gmail 421 4.7.28, Yahoo 421 4.7.0 [TSS04],
	// Microsoft 451 4.7.650). It lowers the key's rates for a while.
	RateLimited
	// Failure: the work failed for a reason that counts toward the failure
	// cohort (connection refused, timeout, 421 greeting). A cohort in a row
	// suspends the key.
	Failure
)

var signalNames = [...]string{"", "success", "congestion", "rate-limited", "failure"}

func (k SignalKind) String() string {
	if k >= Success && int(k) < len(signalNames) {
		return signalNames[k]
	}
	return "SignalKind(" + strconv.Itoa(int(k)) + ")"
}

// Signal is one piece of feedback about a key.
type Signal struct {
	Kind SignalKind

	// Started is when the work that produced the signal began (for work done
	// under a Permit: Permit.Acquired()). Congestion from work started before
	// the key's last decrease belongs to the same failure run and does not
	// decrease again. Zero means now.
	Started time.Time

	// Reason is kept as the key's last reason (Snapshot), e.g. the reply text.
	Reason string
}

// KeyState is one key's state in a Snapshot.
type KeyState struct {
	Key    string
	Limits Limits // as configured by the policy

	InFlight int // slots held
	Waiting  int // blocked Acquire and Take calls queued on this key

	// Concurrency is the effective (adapted) number of slots; 0: unlimited.
	Concurrency int
	// Rate and ConnectionRate are the effective rates (lowered while a
	// RateLimited signal is in force); 0: unlimited.
	Rate, ConnectionRate rate.Limit
	// Tokens and ConnectionTokens are the tokens available now in each bucket
	// (negative when reserved ahead).
	Tokens, ConnectionTokens float64

	QuotaUsed   int       // events counted in the current quota window
	QuotaResets time.Time // when the next quota unit frees up (zero: none used)

	SuspendedUntil time.Time // zero: not suspended
	LastReason     string    // last Signal.Reason or suspension reason
	LastUsed       time.Time
}

// Kind says what a Request takes.
type Kind uint8

// Request kinds.
const (
	// KindSlot holds a concurrency slot and takes a ConnectionRate token on
	// every key (Acquire).
	KindSlot Kind = iota + 1
	// KindEvent takes a Rate token and a Quota unit on every key (Take).
	KindEvent
)

func (k Kind) String() string {
	switch k {
	case KindSlot:
		return "slot"
	case KindEvent:
		return "event"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Config configures a Governor. Zero values are the documented defaults.
type Config struct {
	// Policy gives keys their limits. nil: no limits.
	Policy *Policy

	// Store holds the keys' state. nil: the built-in in-memory store, used
	// directly without going through the Store interface.
	Store Store

	// IdleTimeout is how long a quiescent key (nothing held, nothing waiting,
	// buckets full, no quota in use, no suspension or penalty in force) is
	// kept before it is forgotten, adapted concurrency included, as Postfix
	// forgets a destination whose queue emptied. 0: DefaultIdleTimeout;
	// negative: never evict.
	IdleTimeout time.Duration

	// Rand is the source of jitter. nil: a randomly seeded source. Give a
	// seeded source (rand.NewPCG(1, 2)) for reproducible runs.
	Rand RandSource

	// OnStoreError, when set, receives the Store errors that no call can
	// return: those of Permit.Release and of the clean-up after a cancelled
	// wait (wrapped with ErrStore). Called synchronously; keep it short.
	OnStoreError func(error)

	// Tickets prefixes holder and waiter identities in a shared Store so that
	// they are unique across processes. "": a random 64-bit hex string.
	Tickets string
}

// RandSource is math/rand/v2's Source. The Governor serializes calls to it.
type RandSource interface{ Uint64() uint64 }

// itoa avoids strconv in the hot files' String methods.
func itoa(i int) string { return strconv.Itoa(i) }

// ctxDeadline returns the deadline of ctx or the zero time.
func ctxDeadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

var (
	errLimitsMismatch = errors.New("governor: Request.Limits and Request.Keys differ in length")
	errUnsortedKeys   = errors.New("governor: Request.Keys must be non-empty, sorted and distinct")
)
