package governor

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestRandomizedOperations runs 100,000 mixed operations over 1,000 keys from
// 50 goroutines (in fake time) and checks that nothing is left held or
// queued and no goroutine is left behind. Run it with -race.
func TestRandomizedOperations(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, store := range []string{"memory", "store"} {
		t.Run(store, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ops := 100_000
				if store == "store" || testing.Short() {
					ops = 20_000 // the Store path allocates; keep -race runs short
				}
				randomized(t, store == "store", ops)
			})
		})
	}
}

func randomized(t *testing.T, viaStore bool, ops int) {
	const keys, workers = 1000, 50
	policies := []*Policy{
		{
			Default: Limits{MaxConcurrency: 2, Rate: 50, Burst: 3, ConnectionRate: 20, ConnectionBurst: 2},
			Patterns: []Pattern{
				{Match: "k1*", Limits: Limits{MaxConcurrency: 1, Quota: Quota{Max: 3, Window: time.Second}, Jitter: 5 * time.Millisecond}},
				{Match: "k2*", Limits: Limits{Quota: PerDay(1000, nil), Window: Window{Start: time.Hour, End: 23 * time.Hour}}},
				{Match: "k3*", Limits: Limits{MaxConcurrency: 3, Adaptive: Adaptive{InitialConcurrency: 1, FailureCohort: 3, SuspendFor: 50 * time.Millisecond}}},
			},
		},
		{Default: Limits{MaxConcurrency: 1}},
	}
	cfg := Config{Policy: policies[0], Rand: rand.NewPCG(7, 7), IdleTimeout: time.Second}
	if viaStore {
		cfg.Store = NewMemoryStore(time.Second)
	}
	g, err := New(cfg)
	require.NoError(t, err)
	key := func(r *rand.Rand) string { return fmt.Sprintf("k%d", r.IntN(keys)) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range ops / workers {
				ks := make([]string, 1+r.IntN(3))
				for i := range ks {
					ks[i] = key(r)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(200))*time.Millisecond)
				switch op := r.IntN(100); {
				case op < 40:
					p, err := g.Acquire(ctx, ks...)
					if err == nil {
						time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
						if r.IntN(4) == 0 {
							sig := Signal{Kind: SignalKind(1 + r.IntN(4)), Started: p.Acquired()}
							assert.NoError(t, g.Feedback(ks[0], sig))
						}
						p.Release()
						if r.IntN(10) == 0 {
							p.Release() // double release is harmless
						}
					} else {
						assert.ErrorIs(t, err, context.DeadlineExceeded)
					}
				case op < 65:
					_, err := g.Take(ctx, ks...)
					if err != nil {
						assert.ErrorIs(t, err, context.DeadlineExceeded)
					}
				case op < 75:
					p, _, err := g.TryAcquire(ks...)
					assert.NoError(t, err)
					p.Release()
				case op < 80:
					_, err := g.TryTake(ks...)
					assert.NoError(t, err)
				case op < 90:
					sig := Signal{Kind: SignalKind(1 + r.IntN(4))}
					assert.NoError(t, g.Feedback(ks[0], sig))
				case op < 94:
					assert.NoError(t, g.Suspend(ks[0], time.Now().Add(time.Duration(r.IntN(50))*time.Millisecond), "random"))
				case op < 98:
					assert.NoError(t, g.Resume(ks[0]))
				case op < 99:
					// A cancelled context: nothing is granted.
					cctx, ccancel := context.WithCancel(context.Background())
					ccancel()
					_, err := g.Acquire(cctx, ks...)
					assert.ErrorIs(t, err, context.Canceled)
				default:
					assert.NoError(t, g.SetPolicy(policies[r.IntN(len(policies))]))
				}
				cancel()
			}
		})
	}
	wg.Wait()
	states, err := g.Snapshot()
	require.NoError(t, err)
	require.NotEmpty(t, states)
	for _, s := range states {
		require.Zero(t, s.InFlight, "slots left on %s", s.Key)
		require.Zero(t, s.Waiting, "waiters left on %s", s.Key)
	}
	// Everything goes idle and is forgotten (released keys need two sweeps:
	// the first restarts their idle time).
	for range 2 {
		time.Sleep(24 * time.Hour)
		if ms, ok := cfg.Store.(*MemoryStore); ok {
			ms.EvictIdle(time.Now())
		} else {
			g.EvictIdle()
		}
	}
	states, err = g.Snapshot()
	require.NoError(t, err)
	assert.Len(t, states, 0, "keys left after eviction")
}

// zeroExt is shared by every key that needs no extension: nothing may write it.
func TestZeroExtNeverWritten(t *testing.T) {
	TestRandomizedOperations(t)
	TestBehaviourViaStore(t)
	want := entryExt{lastDecrease: math.MinInt64, lastRateCut: math.MinInt64}
	assert.Equal(t, want, zeroExt)
}
