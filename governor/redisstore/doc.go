// Package redisstore is a governor.Store on Redis: the limits of a
// governor.Governor shared by every process (every worker, every host) that
// uses the same Redis and Prefix. Ten workers sending from one IP then keep
// Gmail at 2 connections in total, not 2 each, and a 421 seen by one worker
// lowers the limit for all.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	st, err := redisstore.New(rdb, redisstore.Options{})
//	...
//	defer st.Close()
//	g, err := governor.New(governor.Config{Store: st, Policy: policy})
//
// # Model
//
// It keeps the semantics of the in-memory store (governor.NewMemoryStore is
// the reference; the tests run one suite against both):
//
//   - Concurrency slots are leases: each key has a sorted set of holder
//     tickets scored by lease expiry. The store renews its holders' leases
//     every RenewEvery (one background goroutine per Store, stopped by
//     Close), so the slot of a crashed or partitioned holder comes back to
//     the fleet when its Lease ends. After a Redis restart that lost the
//     data, the next renewal registers the live holders again (so does a
//     holder whose lease lapsed while its process was paused or cut off
//     for longer than Lease: the key may then be over its limit until
//     releases bring it back under).
//   - Token buckets are GCRA with nanosecond precision (times are stored as
//     Unix nanoseconds in decimal and computed as offsets from now inside
//     the script, where doubles are exact).
//   - Quotas per calendar period (in a time zone) or rolling window, send
//     windows, suspensions and adapted limits (AIMD concurrency, lowered
//     rates, failure cohorts) live in Redis and are shared.
//   - Waiters queue per key, first come first served, across processes; a
//     waiter's place is a lease too, so a crashed waiter does not block the
//     queue. A release publishes to the wake channel of the store whose
//     waiter is at the head of the queue (pub/sub: no polling): Grant.Wake
//     fires within a round trip or two.
//
// Every operation is one Lua script (loaded once, run with EVALSHA; go-redis
// falls back to EVAL when the server lost it), so an Acquire of any number
// of keys is all-or-nothing in one round trip, and so is its Release.
//
// A granted event can be given back (governor.Reservation.Cancel, even
// after its Start): its Grant.Token carries when its calendar units were
// counted and the exact stamp of its rolling units, so that Cancel removes
// that very rolling unit and gives a calendar unit back only while its
// count is the current one. Cancelled event tickets are remembered for the
// idle timeout ("{Prefix}:cancelled"), so a repeated Cancel gives nothing
// more; an event granted by the Degrade store is cancelled there.
//
// # Time
//
// By default decisions use the times the Governor passes (the Store
// contract), so every process's clock should be synchronised (NTP). With
// Options.ServerTime they use Redis's TIME instead, and results are
// converted back to the caller's clock by offset: fleets with skewed clocks
// then agree on every bucket. Send windows and calendar quota boundaries
// are still computed from the caller's clock, since they need time zones.
// Leases always use Redis's TIME: they are about processes being alive.
//
// # Redis Cluster
//
// Every key of a store is named "{Prefix}:...": Prefix is a hash tag, so all
// of a store's keys live in one cluster slot and any set of keys is taken by
// one script, which Cluster requires (the tests run the conformance suite on
// a three-master cluster through a *redis.ClusterClient). The trade-off:
// one store's load goes to one shard (and its replicas). To spread the
// load, give independent key sets their own store and Prefix (one per IP
// pool, per tenant, per region), as long as no single Acquire needs keys of
// two stores. Pub/sub wake-ups use ordinary PUBLISH, which Cluster
// broadcasts to every node.
//
// # When Redis is unreachable
//
// Options.Unavailable chooses:
//
//   - FailClosed (default): every call fails with an error wrapping
//     ErrUnavailable (the Governor wraps it with governor.ErrStore). Nothing
//     is granted that the fleet's limits might not allow.
//   - Degrade: calls are served by an in-memory store with every limit
//     divided by Options.Processes (at least 1 of each), so the fleet stays
//     near its limits. Redis is probed every ProbeEvery; when it answers,
//     new calls go back to it (slots taken meanwhile are released where they
//     were taken).
//
// Both transitions are logged on Options.Logger. Releases and clean-ups
// that cannot reach Redis are kept and retried when it is back (leases end
// them anyway). A call is never cut short by its caller's context once sent
// (a grant could be lost in flight); Options.Timeout bounds it.
//
// # Defaults
//
//	Prefix       "sluice"
//	Lease        30s (a crashed holder's slot returns within it; Gmail
//	             accepts a retry after about 30 s)
//	RenewEvery   Lease/3 (two renewals may fail before a lease ends)
//	ServerTime   false: the Governor's times (the Store contract)
//	Unavailable  FailClosed
//	ProbeEvery   1s
//	Timeout      2s per call
//	IdleTimeout  governor.DefaultIdleTimeout (10 minutes): a quiescent
//	             key's state expires from Redis after it (plus anything
//	             still ahead in it, such as a suspension)
//
// A Store is safe for concurrent use by many goroutines. It needs Redis 6.2
// or later (ZADD GT; scripts replicated by effects, so that they may read
// TIME); Valkey works too.
//
// # Running the Redis tests locally
//
// The tests need a real Redis server. They start their own redis-server
// (from PATH; Debian/Ubuntu: apt-get install redis-server) on a free
// loopback port with persistence off, and stop it at the end:
//
//	go test -race ./governor/redisstore/
//
// To use a running server instead (its keys are namespaced by a random
// prefix per test and expire after the idle timeout):
//
//	SLUICE_TEST_REDIS=127.0.0.1:6379 go test ./governor/redisstore/
//
// Without either, the tests skip with a message, except with CI=true, where
// they fail. The fault tests always start their own redis-server (they kill
// and restart it), and the cluster test starts three and joins them with
// redis-cli (installed with redis-server); -short skips those and the tests
// that spawn processes. The benchmarks run against the same server:
//
//	go test -run '^$' -bench . -benchtime 2000x ./governor/redisstore/
package redisstore
