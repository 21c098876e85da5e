package redisstore_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// Two workers (two processes in real life) share Gmail's limit of 2
// connections per source IP through one Redis, and a 421 4.4.5 seen by one
// lowers the limit for both. (The tests give SLUICE_TEST_REDIS the address
// of the server they started.)
func Example() {
	addr := os.Getenv("SLUICE_TEST_REDIS")
	prefix := "example-" + strconv.FormatInt(time.Now().UnixNano(), 36) // this run's keys only
	policy := &governor.Policy{Patterns: []governor.Pattern{
		{Match: "ip:*", Limits: governor.Limits{MaxConcurrency: 2}},
	}}
	worker := func() (*governor.Governor, func()) {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		st, err := redisstore.New(rdb, redisstore.Options{Prefix: prefix})
		if err != nil {
			panic(err)
		}
		g, err := governor.New(governor.Config{Store: st, Policy: policy})
		if err != nil {
			panic(err)
		}
		return g, func() { st.Close(); rdb.Close() }
	}
	a, closeA := worker()
	defer closeA()
	b, closeB := worker()
	defer closeB()

	p1, _, _ := a.TryAcquire("ip:203.0.113.7")
	p2, _, _ := a.TryAcquire("ip:203.0.113.7")
	_, d, _ := b.TryAcquire("ip:203.0.113.7")
	fmt.Println("worker b:", d.OK, d.Limit, d.Key)

	// b's connection was refused with 421 4.4.5: the limit drops for a too
	_ = b.Feedback("ip:203.0.113.7", governor.Signal{Kind: governor.Congestion, Started: p1.Acquired().Add(-time.Second), Reason: "421 4.4.5"})
	p1.Release()
	p2.Release()
	ks, _ := a.Snapshot()
	fmt.Println("worker a sees concurrency", ks[0].Concurrency, "after", ks[0].LastReason)
	// Output:
	// worker b: false concurrency ip:203.0.113.7
	// worker a sees concurrency 1 after 421 4.4.5
}

// With Degrade, a process that cannot reach Redis keeps going on its own
// with limit/Processes of every limit (here 4/2 = 2 slots).
func ExampleOptions_degrade() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}) // nothing listens there
	defer rdb.Close()
	st, _ := redisstore.New(rdb, redisstore.Options{Unavailable: redisstore.Degrade, Processes: 2})
	defer st.Close()
	g, _ := governor.New(governor.Config{Store: st, Policy: &governor.Policy{
		Default: governor.Limits{MaxConcurrency: 4},
	}})
	for range 3 {
		_, d, err := g.TryAcquire("ip:203.0.113.7")
		fmt.Println(d.OK, d.Limit, err)
	}
	fmt.Println("degraded:", st.Degraded())

	fc, _ := redisstore.New(rdb, redisstore.Options{}) // FailClosed
	defer fc.Close()
	g, _ = governor.New(governor.Config{Store: fc})
	_, _, err := g.TryAcquire("ip:203.0.113.7")
	fmt.Println(errors.Is(err, redisstore.ErrUnavailable), errors.Is(err, governor.ErrStore))
	// Output:
	// true none <nil>
	// true none <nil>
	// false concurrency <nil>
	// degraded: true
	// true true
}
