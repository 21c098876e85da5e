package governor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// blockedCall starts call in a goroutine and returns a channel that receives
// its error when it returns, once the call is blocked.
func blockedCall(t *testing.T, call func() error) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("the call did not block: %v", err)
	default:
	}
	return done
}

// SetPolicy must wake calls waiting on a Store, whose Wake channel only
// reports changes the store itself sees (slots, queues, suspensions).
func TestSetPolicyWakesStoreWaiters(t *testing.T) {
	tests := []struct {
		name     string
		old, new Limits
		use      func(t *testing.T, g *Governor) // uses up the old limit
		call     func(ctx context.Context, g *Governor) error
	}{
		{
			name: "slot: Wake, no RetryAt",
			old:  Limits{MaxConcurrency: 1}, new: Limits{MaxConcurrency: 2},
			use: func(t *testing.T, g *Governor) {
				p, err := g.Acquire(t.Context(), "k")
				require.NoError(t, err)
				t.Cleanup(p.Release)
			},
			call: func(ctx context.Context, g *Governor) error {
				p, err := g.Acquire(ctx, "k")
				p.Release()
				return err
			},
		},
		{
			name: "event: quota, RetryAt hours ahead",
			old:  Limits{Quota: PerDay(1, nil)}, new: Limits{Quota: PerDay(2, nil)},
			use: func(t *testing.T, g *Governor) {
				_, err := g.Take(t.Context(), "k")
				require.NoError(t, err)
			},
			call: func(ctx context.Context, g *Governor) error {
				_, err := g.Take(ctx, "k")
				return err
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g, err := New(Config{Policy: &Policy{Default: tt.old}, Store: NewMemoryStore(0)})
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				tt.use(t, g)
				done := blockedCall(t, func() error { return tt.call(ctx, g) })
				require.NoError(t, g.SetPolicy(&Policy{Default: tt.new}))
				synctest.Wait() // no time passes: only SetPolicy can have woken it
				select {
				case err := <-done:
					assert.NoError(t, err)
				default:
					t.Fatal("SetPolicy did not wake the call waiting on the Store")
				}
			})
		})
	}
}

// lossyStore loses every wake-up: its Wake channels never fire.
type lossyStore struct {
	*MemoryStore
	reserves atomic.Int64
}

func (s *lossyStore) Reserve(ctx context.Context, req *Request) (Grant, error) {
	s.reserves.Add(1)
	g, err := s.MemoryStore.Reserve(ctx, req)
	if g.Wake != nil {
		g.Wake = make(chan struct{})
	}
	return g, err
}

// A store that loses a wake-up delays a waiter by storeRecheck at most, and
// the re-check costs one Reserve per storeRecheck, not a busy loop.
func TestStoreLostWakeupRechecks(t *testing.T) {
	tests := []struct {
		name  string
		block func(t *testing.T, g *Governor) (unblock func())
		limit LimitKind
	}{
		{
			name: "slot released",
			block: func(t *testing.T, g *Governor) func() {
				p, err := g.Acquire(context.Background(), "k")
				require.NoError(t, err)
				return p.Release
			},
			limit: LimitConcurrency,
		},
		{
			name: "resumed before RetryAt",
			block: func(t *testing.T, g *Governor) func() {
				require.NoError(t, g.Suspend("k", time.Now().Add(time.Hour), "operator"))
				return func() { require.NoError(t, g.Resume("k")) }
			},
			limit: LimitSuspended,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &lossyStore{MemoryStore: NewMemoryStore(0)}
				g, err := New(Config{Policy: &Policy{Default: Limits{MaxConcurrency: 1}}, Store: st})
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				unblock := tt.block(t, g)
				_, d, err := g.TryAcquire("k")
				require.NoError(t, err)
				require.Equal(t, tt.limit, d.Limit)
				st.reserves.Store(0)
				done := blockedCall(t, func() error {
					p, err := g.Acquire(ctx, "k")
					p.Release()
					return err
				})
				time.Sleep(62 * time.Second)
				// Reserves at 0, 5 s, ..., 60 s.
				assert.Equal(t, int64(13), st.reserves.Load(), "one Reserve per storeRecheck, no busy loop")
				unblock()
				synctest.Wait()
				select {
				case <-done:
					t.Fatal("granted without a wake-up or a re-check: the test store does not lose wake-ups")
				default:
				}
				time.Sleep(storeRecheck)
				synctest.Wait()
				select {
				case err := <-done:
					assert.NoError(t, err)
				default:
					t.Fatal("a lost wake-up left the caller waiting past storeRecheck")
				}
			})
		})
	}
}

// tokenStore stamps every grant with a Token and records the Tokens its
// Cancel is given.
type tokenStore struct {
	*MemoryStore
	mu        sync.Mutex
	granted   []string
	cancelled []string
}

func (s *tokenStore) Reserve(ctx context.Context, req *Request) (Grant, error) {
	g, err := s.MemoryStore.Reserve(ctx, req)
	if g.OK {
		g.Token = "tok:" + req.Ticket + "@" + g.Start.Format(time.RFC3339Nano)
		s.mu.Lock()
		s.granted = append(s.granted, g.Token)
		s.mu.Unlock()
	}
	return g, err
}

func (s *tokenStore) Cancel(ctx context.Context, req *Request, g Grant) error {
	s.mu.Lock()
	s.cancelled = append(s.cancelled, g.Token)
	s.mu.Unlock()
	return s.MemoryStore.Cancel(ctx, req, g)
}

// A grant cancelled before its Start (tokens taken ahead) reaches the
// store's Cancel with the Token the store put on it.
func TestCancelHandsBackGrantToken(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		call func(ctx context.Context, g *Governor) error
	}{
		{
			name: "Take, rate token ahead",
			lim:  Limits{Rate: rate.Every(time.Minute), Burst: 1, Quota: Quota{Max: 10, Window: time.Hour}},
			call: func(ctx context.Context, g *Governor) error {
				_, err := g.Take(ctx, "k")
				return err
			},
		},
		{
			name: "Acquire, connection token ahead",
			lim:  Limits{ConnectionRate: rate.Every(time.Minute), ConnectionBurst: 1},
			call: func(ctx context.Context, g *Governor) error {
				p, err := g.Acquire(ctx, "k")
				p.Release()
				return err
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &tokenStore{MemoryStore: NewMemoryStore(0)}
				g, err := New(Config{Policy: &Policy{Default: tt.lim}, Store: st})
				require.NoError(t, err)
				require.NoError(t, tt.call(t.Context(), g)) // the burst
				ctx, cancel := context.WithCancel(t.Context())
				done := blockedCall(t, func() error { return tt.call(ctx, g) }) // granted ahead, sleeping
				cancel()
				var werr *WaitError
				require.ErrorAs(t, <-done, &werr)
				st.mu.Lock()
				defer st.mu.Unlock()
				require.Len(t, st.granted, 2)
				require.Equal(t, []string{st.granted[1]}, st.cancelled, "Cancel got the grant's Token")
				assert.NotEmpty(t, st.cancelled[0])
			})
		})
	}
}
