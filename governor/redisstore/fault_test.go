package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// Fault tests run their own redis-server, killed and restarted mid-run
// (without persistence: a restart loses every key, the worst case).

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func ownRedis(t *testing.T) *redisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("kills and restarts a redis-server")
	}
	srv, err := startRedis(0)
	if err != nil {
		unavailableRedis(t, err.Error())
	}
	t.Cleanup(srv.stop)
	return srv
}

func restart(t *testing.T, srv *redisServer) {
	t.Helper()
	s, err := startRedis(srv.port)
	require.NoError(t, err)
	*srv = *s
}

func faultOptions(mode redisstore.Mode, logs *logBuf) redisstore.Options {
	return redisstore.Options{
		Lease:       600 * time.Millisecond,
		ProbeEvery:  20 * time.Millisecond,
		Timeout:     2 * time.Second,
		Unavailable: mode,
		Processes:   2,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
	}
}

func governorOn(t *testing.T, st governor.Store, max int) *governor.Governor {
	t.Helper()
	g, err := governor.New(governor.Config{
		Store:  st,
		Policy: &governor.Policy{Keys: map[string]governor.Limits{"k": {MaxConcurrency: max}}},
	})
	require.NoError(t, err)
	return g
}

func inFlight(t *testing.T, st governor.Store, key string) (int, error) {
	ks, err := st.Snapshot(context.Background(), time.Now())
	if err != nil {
		return 0, err
	}
	for _, k := range ks {
		if k.Key == key {
			return k.InFlight, nil
		}
	}
	return 0, nil
}

func TestRedisRestartFailClosed(t *testing.T) {
	srv := ownRedis(t)
	var logs logBuf
	opt := faultOptions(redisstore.FailClosed, &logs)
	opt.Prefix = randomPrefix()
	a := newStore(t, srv.addr, opt)
	b := newStore(t, srv.addr, opt)
	ga, gb := governorOn(t, a, 1), governorOn(t, b, 1)

	p, err := ga.Acquire(context.Background(), "k")
	require.NoError(t, err)
	blocked := make(chan error, 1)
	go func() {
		_, err := gb.Acquire(context.Background(), "k")
		blocked <- err
	}()
	eventually(t, "b waits", func() bool {
		ks, err := b.Snapshot(context.Background(), time.Now())
		return err == nil && len(ks) == 1 && ks[0].Waiting == 1
	})

	srv.stop()
	// the blocked Acquire fails instead of waiting for a lost wake-up
	require.ErrorIs(t, <-blocked, redisstore.ErrUnavailable)
	_, _, err = gb.TryAcquire("k")
	require.ErrorIs(t, err, governor.ErrStore)
	require.ErrorIs(t, err, redisstore.ErrUnavailable)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = gb.Acquire(ctx, "k")
	cancel()
	require.ErrorIs(t, err, redisstore.ErrUnavailable)

	restart(t, srv)
	// the restart lost every key; a's renewal registers its live holder again
	eventually(t, "a's held slot is counted again", func() bool {
		n, err := inFlight(t, b, "k")
		return err == nil && n == 1
	})
	_, d, err := gb.TryAcquire("k")
	require.NoError(t, err)
	require.False(t, d.OK)

	// a dies without releasing (its store stops renewing): the lease ends it
	require.NoError(t, a.Close())
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q, err := gb.Acquire(ctx, "k")
	require.NoError(t, err)
	q.Release()
	p.Release() // late and harmless
	n, err := inFlight(t, b, "k")
	require.NoError(t, err)
	require.Equal(t, 0, n)
	require.Contains(t, logs.String(), "redis unreachable")
	require.Contains(t, logs.String(), "redis reachable again")
}

func TestRedisRestartReleaseDuringOutage(t *testing.T) {
	srv := ownRedis(t)
	var logs logBuf
	opt := faultOptions(redisstore.FailClosed, &logs)
	opt.Prefix = randomPrefix()
	opt.Lease = 30 * time.Second // the release must not rely on the lease
	opt.RenewEvery = 50 * time.Millisecond
	opt.Timeout = 300 * time.Millisecond
	a := newStore(t, srv.addr, opt)
	ga := governorOn(t, a, 1)
	p, err := ga.Acquire(context.Background(), "k")
	require.NoError(t, err)
	// a network outage that keeps the data: pause the server's clients
	c := newClient(t, srv.addr)
	require.NoError(t, c.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err())
	p.Release() // fails (timeout): kept for later
	eventually(t, "the paused release reached Redis", func() bool {
		n, err := inFlight(t, a, "k")
		return err == nil && n == 0
	})
	q, d, err := ga.TryAcquire("k")
	require.NoError(t, err)
	require.True(t, d.OK)
	q.Release()
}

func TestRedisRestartDegrade(t *testing.T) {
	srv := ownRedis(t)
	var logs logBuf
	opt := faultOptions(redisstore.Degrade, &logs)
	opt.Prefix = randomPrefix()
	st := newStore(t, srv.addr, opt)
	g := governorOn(t, st, 4) // 4 in the fleet, 4/2 = 2 per process alone

	p0, err := g.Acquire(context.Background(), "k")
	require.NoError(t, err)
	srv.stop()

	var local []governor.Permit
	for range 2 {
		p, d, err := g.TryAcquire("k")
		require.NoError(t, err)
		require.True(t, d.OK)
		local = append(local, p)
	}
	require.True(t, st.Degraded())
	_, d, err := g.TryAcquire("k")
	require.NoError(t, err)
	require.False(t, d.OK)
	require.Equal(t, governor.LimitConcurrency, d.Limit)
	// a blocked waiter in degraded mode is served locally
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := g.Acquire(ctx, "k")
		p.Release()
		done <- err
	}()
	local[0].Release()
	require.NoError(t, <-done)
	local[1].Release()
	p0.Release() // Redis is away: retried when it is back

	restart(t, srv)
	eventually(t, "back on Redis", func() bool { return !st.Degraded() })
	var held []governor.Permit
	for range 4 {
		p, d, err := g.TryAcquire("k")
		require.NoError(t, err)
		require.True(t, d.OK, d.String())
		held = append(held, p)
	}
	_, d, err = g.TryAcquire("k")
	require.NoError(t, err)
	require.False(t, d.OK)
	for _, p := range held {
		p.Release()
	}
	n, err := inFlight(t, st, "k")
	require.NoError(t, err)
	require.Equal(t, 0, n)
	out := logs.String()
	require.Contains(t, out, "redis unreachable")
	require.Contains(t, out, "mode=degrade")
	require.Contains(t, out, "redis reachable again")
	require.Less(t, strings.Index(out, "unreachable"), strings.LastIndex(out, "reachable again"))
}

func TestUnavailableAtStart(t *testing.T) {
	var logs logBuf
	opt := faultOptions(redisstore.FailClosed, &logs)
	st := newStore(t, "127.0.0.1:1", opt) // nothing listens on port 1
	g := governorOn(t, st, 1)
	_, _, err := g.TryAcquire("k")
	require.True(t, errors.Is(err, redisstore.ErrUnavailable) && errors.Is(err, governor.ErrStore), err)
	require.ErrorIs(t, g.Feedback("k", governor.Signal{Kind: governor.Success}), redisstore.ErrUnavailable)
	_, err = g.Snapshot()
	require.ErrorIs(t, err, redisstore.ErrUnavailable)
}

// With Degrade, an Acquire blocked on Redis when it goes away goes on with
// the local limits instead of waiting for a wake-up that cannot come.
func TestDegradeMovesBlockedWaiter(t *testing.T) {
	srv := ownRedis(t)
	var logs logBuf
	opt := faultOptions(redisstore.Degrade, &logs)
	opt.Prefix = randomPrefix()
	st := newStore(t, srv.addr, opt)
	g := governorOn(t, st, 2) // 2 in the fleet, 1 per process alone
	var held []governor.Permit
	for range 2 {
		p, err := g.Acquire(context.Background(), "k")
		require.NoError(t, err)
		held = append(held, p)
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := g.Acquire(ctx, "k")
		p.Release()
		got <- err
	}()
	eventually(t, "the third Acquire waits in Redis", func() bool {
		ks, err := st.Snapshot(context.Background(), time.Now())
		return err == nil && len(ks) == 1 && ks[0].Waiting == 1
	})
	srv.stop()
	require.NoError(t, <-got)
	require.True(t, st.Degraded())
	for _, p := range held {
		p.Release()
	}
	restart(t, srv)
	eventually(t, "back on Redis", func() bool { return !st.Degraded() })
}
