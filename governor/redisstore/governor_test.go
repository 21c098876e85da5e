package redisstore_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicemail/sluice/governor"
	"github.com/sluicemail/sluice/governor/redisstore"
)

// Two Governors (two processes) on one Redis, many goroutines each, mixed
// Acquire (some cancelled while waiting), Release, Take and Feedback over a
// few keys: no key is ever over its limit as seen by the holders, and at
// the end nothing is held or queued and no goroutine is left.
func TestGovernorsShareUnderLoad(t *testing.T) {
	addr := needRedis(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	prefix := randomPrefix()
	pol := &governor.Policy{
		Default: governor.Limits{MaxConcurrency: 3, Rate: 5000, Burst: 50},
		Keys:    map[string]governor.Limits{"ip:1": {MaxConcurrency: 2}},
	}
	keys := []string{"ip:1", "ip:2", "site:a", "site:b"}
	var held [4]atomic.Int32
	var over atomic.Int32
	var ops atomic.Int64
	func() {
		var gs []*governor.Governor
		for range 2 {
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			st, err := redisstore.New(c, redisstore.Options{Prefix: prefix, Lease: 5 * time.Second})
			require.NoError(t, err)
			defer st.Close()
			g, err := governor.New(governor.Config{Store: st, Policy: pol})
			require.NoError(t, err)
			gs = append(gs, g)
		}
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 7))
				g := gs[w%2]
				for range 60 {
					i, j := r.IntN(4), r.IntN(4)
					switch r.IntN(4) {
					case 0, 1:
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(20))*time.Millisecond)
						p, err := g.Acquire(ctx, keys[i], keys[j])
						cancel()
						if err != nil {
							require.ErrorIs(t, err, context.DeadlineExceeded)
							continue
						}
						for _, k := range []int{i, j} {
							lim := int32(3)
							if k == 0 {
								lim = 2
							}
							if n := held[k].Add(1); n > lim {
								over.Add(1)
							}
							if i == j {
								break
							}
						}
						time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
						held[i].Add(-1)
						if i != j {
							held[j].Add(-1)
						}
						p.Release()
					case 2:
						_, err := g.Take(context.Background(), keys[i])
						require.NoError(t, err)
					case 3:
						require.NoError(t, g.Feedback(keys[i], governor.Signal{Kind: governor.Success}))
					}
					ops.Add(1)
				}
			}()
		}
		wg.Wait()
	}()
	require.Zero(t, over.Load(), "a key was over its limit")
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	st, err := redisstore.New(c, redisstore.Options{Prefix: prefix})
	require.NoError(t, err)
	ks, err := st.Snapshot(context.Background(), time.Now())
	require.NoError(t, err)
	require.Len(t, ks, 4)
	for _, k := range ks {
		require.Equal(t, 0, k.InFlight, k.Key)
		require.Equal(t, 0, k.Waiting, k.Key)
	}
	t.Logf("%d operations", ops.Load())
	require.NoError(t, st.Close())
}

// With ServerTime the buckets run on Redis's clock, whatever the callers'
// clocks say; results come back on the caller's clock.
func TestServerTime(t *testing.T) {
	addr := needRedis(t)
	st := newStore(t, addr, redisstore.Options{ServerTime: true})
	lim := governor.Limits{Rate: 10, Burst: 1}
	skewed := time.Now().Add(-time.Hour) // a caller an hour behind
	g := reserve(t, st, req(governor.KindEvent, skewed, lim, "k"))
	require.True(t, g.OK)
	require.True(t, g.Start.Equal(skewed))
	other := time.Now().Add(time.Hour) // and one an hour ahead
	g = reserve(t, st, req(governor.KindEvent, other, lim, "k"))
	require.True(t, g.OK)
	ahead := g.Start.Sub(other)
	require.Greater(t, ahead, time.Duration(0), "the second token is due later on Redis's clock")
	require.LessOrEqual(t, ahead, 100*time.Millisecond)
	for i := range 3 {
		r := req(governor.KindSlot, skewed, governor.Limits{MaxConcurrency: 1}, "s"+strconv.Itoa(i))
		require.True(t, reserve(t, st, r).OK)
		require.NoError(t, st.Release(context.Background(), r))
	}
}

// A Release in one store (process) wakes an Acquire blocked in another one
// through pub/sub: the Governor waits on Grant.Wake only (no RetryAt, so no
// timer), so this would hang without the wake-up.
func TestWakeAcrossStores(t *testing.T) {
	addr := needRedis(t)
	prefix := randomPrefix()
	pol := &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}
	var gs [2]*governor.Governor
	for i := range gs {
		st := newStore(t, addr, redisstore.Options{Prefix: prefix})
		g, err := governor.New(governor.Config{Store: st, Policy: pol})
		require.NoError(t, err)
		gs[i] = g
	}
	for range 20 {
		p, err := gs[0].Acquire(context.Background(), "k")
		require.NoError(t, err)
		got := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			q, err := gs[1].Acquire(ctx, "k")
			q.Release()
			got <- err
		}()
		_, d, err := gs[0].TryAcquire("k")
		require.NoError(t, err)
		require.False(t, d.OK)
		p.Release()
		require.NoError(t, <-got)
	}
}

// A waiter whose process died leaves the queue when its lease ends, and
// the live waiter behind it is woken (it waits on its Wake channel only).
func TestDeadWaiterLeavesQueue(t *testing.T) {
	addr := needRedis(t)
	prefix := randomPrefix()
	lim := governor.Limits{MaxConcurrency: 1}
	a := newStore(t, addr, redisstore.Options{Prefix: prefix, Lease: 200 * time.Millisecond})
	b := newStore(t, addr, redisstore.Options{Prefix: prefix, Lease: 600 * time.Millisecond})
	h := req(governor.KindSlot, time.Now(), lim, "k")
	require.True(t, reserve(t, b, h).OK)
	w := req(governor.KindSlot, time.Now(), lim, "k")
	require.False(t, reserve(t, a, w).OK) // queued at the head
	require.NoError(t, a.Close())         // "dies": no more renewals

	g, err := governor.New(governor.Config{Store: b, Policy: &governor.Policy{Default: lim}})
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := g.Acquire(ctx, "k")
		p.Release()
		got <- err
	}()
	eventually(t, "the live waiter queues behind the dead one", func() bool {
		ks, err := b.Snapshot(context.Background(), time.Now())
		return err == nil && len(ks) == 1 && ks[0].Waiting == 2
	})
	require.NoError(t, b.Release(context.Background(), h)) // wakes the dead head only
	require.NoError(t, <-got)
}

// Many goroutines in two stores contend for one slot with no deadline to
// speak of: every blocked Acquire waits on its Wake channel only, so a
// single lost wake-up would stall it until its 30-second context ends.
func TestNoLostWakeups(t *testing.T) {
	addr := needRedis(t)
	prefix := randomPrefix()
	pol := &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}
	var gs [2]*governor.Governor
	for i := range gs {
		st := newStore(t, addr, redisstore.Options{Prefix: prefix})
		g, err := governor.New(governor.Config{Store: st, Policy: pol})
		require.NoError(t, err)
		gs[i] = g
	}
	var holders atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := gs[w%2]
			for range 25 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				p, err := g.Acquire(ctx, "k")
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if holders.Add(1) != 1 {
					errs <- errors.New("two holders of a one-slot key")
				}
				holders.Add(-1)
				p.Release()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A Governor on Redis gives an event back with Reservation.Cancel: its
// calendar and rolling quota units and its token, on the callers' clock and
// on Redis's (ServerTime, where the rolling unit is stamped by TIME).
func TestReservationCancel(t *testing.T) {
	addr := needRedis(t)
	tests := []struct {
		name string
		opt  redisstore.Options
		lim  governor.Limits
	}{
		{"calendar", redisstore.Options{}, governor.Limits{Quota: governor.PerDay(2, time.UTC)}},
		{"rolling", redisstore.Options{}, governor.Limits{Quota: governor.Quota{Max: 2, Window: time.Hour}}},
		{"rolling, server time", redisstore.Options{ServerTime: true}, governor.Limits{Quota: governor.Quota{Max: 2, Window: time.Hour}}},
		{"rate", redisstore.Options{}, governor.Limits{Rate: 1.0 / 3600, Burst: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t, addr, tt.opt)
			g, err := governor.New(governor.Config{Policy: &governor.Policy{Default: tt.lim}, Store: st})
			require.NoError(t, err)
			const key = "mailbox:alice@example.org"
			r, err := g.TakeReservation(t.Context(), key)
			require.NoError(t, err)
			require.True(t, r.Decision().OK)
			_, err = g.Take(t.Context(), key)
			require.NoError(t, err)
			d, err := g.TryTake(key)
			require.NoError(t, err)
			require.False(t, d.OK, "used up")
			require.NoError(t, r.Cancel())
			require.NoError(t, r.Cancel(), "a second Cancel is a no-op")
			d, err = g.TryTake(key)
			require.NoError(t, err)
			require.True(t, d.OK, "given back: %v", d)
			d, err = g.TryTake(key)
			require.NoError(t, err)
			require.False(t, d.OK, "given back once")
		})
	}
}
