// Package governor enforces keyed concurrency, rate, quota and send-window
// limits, and adapts them to what receivers answer.
//
// # Model
//
// A key is a string the caller builds: "ip:203.0.113.7", "site:google.com",
// "ip:203.0.113.7|site:google.com", "mailbox:alice@example.org",
// "tenant:x". A Policy gives every key its Limits (exact keys, then glob
// patterns in order, then a default); the zero Limits limit nothing.
//
// There are two ways to use a key:
//
//   - Acquire holds a concurrency slot on each of its keys (and takes a
//     ConnectionRate token) until Permit.Release. The deliver package holds one
//     Permit per open connection, on the keys source IP, site, source IP x
//     site and the caller's keys.
//   - Take consumes an event: one Rate token and one Quota unit on each key,
//     after a random Jitter delay. deliver takes one per message.
//     TakeReservation does the same and returns a Reservation whose Cancel
//     gives the token and the unit back when the event then does not happen
//     (a message deferred for every recipient): a calendar unit only while
//     its period lasts, a rolling unit only while it is in the window.
//
// Both take all their keys at once or nothing, in a fixed internal order, so
// that two callers never deadlock; waiters on a key are served first come,
// first served; both honour the context (a wait known to end after the
// deadline fails at once with an error wrapping context.DeadlineExceeded),
// and a cancelled call gives back everything it had taken, including rate
// tokens reserved ahead. TryAcquire and TryTake never wait: their Decision
// says which key and limit refused them and, when the limit is a matter of
// time, when they would succeed. Every Decision names the key and limit that
// held a call up and for how long, for logging.
//
// A sender such as deliver uses it like this:
//
//	keys := []string{"ip:" + src, "site:" + site, "ip:" + src + "|site:" + site, "mailbox:" + from}
//	conn, err := g.Acquire(ctx, keys...) // one slot per open connection
//	if err != nil { ... }                 // a *WaitError: defer the messages
//	defer conn.Release()                  // exactly once; more is harmless
//	for _, msg := range batch {
//		r, err := g.TakeReservation(ctx, keys...) // rate, quota, window, jitter
//		if err != nil { ... }
//		reply := send(msg)
//		if nothingSent(reply) { r.Cancel() }    // every recipient deferred: give the event back
//		g.Feedback(pairKey, governor.Signal{Kind: kindOf(reply), Started: conn.Acquired(), Reason: reply})
//	}
//
// Report a Congestion before releasing the connection's permit: the number of
// holders at that moment tells the governor what the receiver accepted.
//
// Send windows (Window) and suspensions (Suspend, Resume) stop new grants on
// a key; slots already held are not touched.
//
// # Feedback
//
// Feedback(key, Signal) adapts a key to its receiver:
//
//   - Congestion (Gmail 421 4.4.5): the effective concurrency is multiplied by
//     Adaptive.Decrease (0.5), once per failure run: signals about work that
//     started before the last decrease do not decrease again. The governor
//     also notes how many holders the receiver accepted (holders at the signal
//     minus one) and stops growth there for Adaptive.ProbeAfter (10 minutes),
//     so a receiver that refuses a third connection keeps the key at 2.
//   - Success: additive increase of Adaptive.Increase/c per success (so +1
//     per c successes at concurrency c: Postfix's feedback 1/N), never above
//     MaxConcurrency. The effective concurrency never drops below 1.
//   - RateLimited (Gmail 421 4.7.28, Yahoo TSS04, Microsoft 451 4.7.650):
//     rates are multiplied by Adaptive.RateFactor (0.5) for Adaptive.RateFor
//     (10 minutes), then restored; a key without rates pauses for
//     Adaptive.RatePause (30 s).
//   - Failure: Adaptive.FailureCohort failures in a row (default: the
//     effective concurrency, Postfix's one failed pseudo-cohort) suspend the
//     key for Adaptive.SuspendFor (5 minutes, Postfix's minimal_backoff_time).
//
// A key starts at Adaptive.InitialConcurrency when set (Postfix starts
// destinations at 5, PostfixInitialConcurrency; Gmail is safe at 1-2
// connections per source IP, so a policy gives Gmail's keys MaxConcurrency 2).
//
// # Defaults
//
//	Limits zero values          no limit of that kind
//	Burst, ConnectionBurst 0    1 (rate.Limiter's burst 0 would refuse all)
//	Rate 0 or rate.Inf          unlimited (unlike rate.Limiter: 0 allows nothing)
//	Adaptive.InitialConcurrency MaxConcurrency (no slow start); Postfix uses 5
//	Adaptive.Increase           1   (+1 per c successes; Postfix 1/concurrency)
//	Adaptive.Decrease           0.5 (TCP AIMD)
//	Adaptive.ProbeAfter         10 minutes
//	Adaptive.FailureCohort      effective concurrency, else 5 (Postfix cohort limit 1)
//	Adaptive.SuspendFor         5 minutes (Postfix minimal_backoff_time 300s)
//	Adaptive.RateFactor         0.5 for Adaptive.RateFor 10 minutes
//	Adaptive.RatePause          30 s (Gmail: a retry after about 30 s succeeds)
//	Config.IdleTimeout          10 minutes
//	Store re-check              5 s: a call waiting on a Config.Store Reserves
//	                            again at least this often, even with a Wake
//	                            channel (a lost wake-up costs at most that)
//
// # State, time and memory
//
// State lives in memory by default, sharded by key under one mutex per shard
// (the hot path is one lock, one map lookup and no allocation). Config.Store
// puts it behind the Store interface instead, so that processes share limits
// (governor/redisstore); the Store's doc comment is its contract, and
// governor/storetest checks a Store against it.
//
// Keys that are quiescent (nothing held or queued, buckets full, no quota in
// use, no suspension, penalty or growth cap in force) for Config.IdleTimeout
// are forgotten, lazily as new keys arrive or with EvictIdle (a key released
// since the previous sweep survives one more: Release reads no clock), and the
// shard maps are rebuilt when they shrink: memory follows active keys only.
//
// The governor reads time only through time.Now, which testing/synctest
// fakes, and measures waits on the monotonic clock; pure helpers take the time
// as an argument (Window.NextOpen, Quota.Period), as x/time/rate's AllowN does.
// Token buckets follow golang.org/x/time/rate's semantics (rate.Limit, burst,
// reservations that can be cancelled) but are kept as GCRA arrival times
// inside the key's state, so that several keys are checked and taken under
// one lock, with nanosecond precision and no allocation.
//
// A Governor is safe for concurrent use by any number of goroutines. It starts
// no goroutine and needs no Close.
package governor
