package governor

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/time/rate"
)

// The baseline is what users hand-roll today: a mutex-guarded map of
// *rate.Limiter plus a counting semaphore per key.
type baseline struct {
	mu   sync.Mutex
	m    map[string]*baseKey
	conc int
	r    rate.Limit
	b    int
}

type baseKey struct {
	lim *rate.Limiter
	sem chan struct{}
}

func newBaseline(conc int, r rate.Limit, burst int) *baseline {
	return &baseline{m: make(map[string]*baseKey), conc: conc, r: r, b: burst}
}

func (bl *baseline) get(key string) *baseKey {
	bl.mu.Lock()
	k := bl.m[key]
	if k == nil {
		k = &baseKey{lim: rate.NewLimiter(bl.r, bl.b), sem: make(chan struct{}, bl.conc)}
		bl.m[key] = k
	}
	bl.mu.Unlock()
	return k
}

func (bl *baseline) acquire(key string) *baseKey {
	k := bl.get(key)
	k.sem <- struct{}{}
	return k
}

func (k *baseKey) release() { <-k.sem }

func benchGov(b *testing.B, l Limits) *Governor {
	g, err := New(Config{Policy: &Policy{Default: l}})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkAcquireRelease: uncontended acquire+release of one key.
func BenchmarkAcquireRelease(b *testing.B) {
	b.Run("baseline", func(b *testing.B) {
		bl := newBaseline(10, rate.Inf, 1)
		b.ReportAllocs()
		for b.Loop() {
			bl.acquire("ip:203.0.113.7|site:google.com").release()
		}
	})
	b.Run("governor", func(b *testing.B) {
		g := benchGov(b, Limits{MaxConcurrency: 10})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			p, err := g.Acquire(ctx, "ip:203.0.113.7|site:google.com")
			if err != nil {
				b.Fatal(err)
			}
			p.Release()
		}
	})
}

// BenchmarkTake: taking one token of one key (never waiting).
func BenchmarkTake(b *testing.B) {
	b.Run("baseline", func(b *testing.B) {
		bl := newBaseline(1, 1e9, 1e9)
		b.ReportAllocs()
		for b.Loop() {
			if !bl.get("mailbox:alice@example.org").lim.Allow() {
				b.Fatal("refused")
			}
		}
	})
	b.Run("governor", func(b *testing.B) {
		g := benchGov(b, Limits{Rate: 1e9, Burst: 1e9})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.Take(ctx, "mailbox:alice@example.org"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAcquireReleaseThreeKeys: one connection's keys at once.
func BenchmarkAcquireReleaseThreeKeys(b *testing.B) {
	keys := []string{"ip:203.0.113.7", "site:google.com", "ip:203.0.113.7|site:google.com"}
	b.Run("baseline", func(b *testing.B) {
		bl := newBaseline(10, rate.Inf, 1)
		b.ReportAllocs()
		var ks [3]*baseKey
		for b.Loop() {
			for i, k := range keys { // sorted order by hand
				ks[i] = bl.acquire(k)
			}
			for _, k := range ks {
				k.release()
			}
		}
	})
	b.Run("governor", func(b *testing.B) {
		g := benchGov(b, Limits{MaxConcurrency: 10})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			p, err := g.Acquire(ctx, keys...)
			if err != nil {
				b.Fatal(err)
			}
			p.Release()
		}
	})
}

func keyNames(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "ip:10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + "|site:example.com"
	}
	return ks
}

// BenchmarkParallel10000Keys: acquire+release over 10,000 keys from
// GOMAXPROCS goroutines.
func BenchmarkParallel10000Keys(b *testing.B) {
	keys := keyNames(10_000)
	b.Run("baseline", func(b *testing.B) {
		bl := newBaseline(10, rate.Inf, 1)
		var next atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				bl.acquire(keys[i%uint64(len(keys))]).release()
			}
		})
	})
	b.Run("governor", func(b *testing.B) {
		g := benchGov(b, Limits{MaxConcurrency: 10})
		ctx := context.Background()
		var next atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				p, err := g.Acquire(ctx, keys[i%uint64(len(keys))])
				if err != nil {
					b.Error(err)
					return
				}
				p.Release()
			}
		})
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkBytesPerActiveKey: heap per key while 100,000 keys each hold a
// slot and have taken a token. Reported as bytes/key; ns/op is meaningless.
func BenchmarkBytesPerActiveKey(b *testing.B) {
	const n = 100_000
	keys := keyNames(n)
	b.Run("baseline", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			bl := newBaseline(10, 1000, 10)
			for _, k := range keys {
				bl.acquire(k).lim.Allow()
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/n, "bytes/key")
			runtime.KeepAlive(bl)
		}
	})
	b.Run("governor", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			g := benchGov(b, Limits{MaxConcurrency: 10, Rate: 1000, Burst: 10})
			ps := make([]Permit, 0, n)
			for _, k := range keys {
				p, _ := g.Acquire(context.Background(), k)
				ps = append(ps, p)
				_, _ = g.TryTake(k)
			}
			after := heapInUse()
			// The permits slice is the caller's, not the governor's.
			perm := uint64(cap(ps)) * uint64(unsafeSizeofPermit)
			b.ReportMetric(float64(after-before-perm)/n, "bytes/key")
			for _, p := range ps {
				p.Release()
			}
			runtime.KeepAlive(g)
		}
	})
}

// BenchmarkMemoryAfterIdle: heap per key after touching 1,000,000 distinct
// keys once and letting them go idle (the baseline never forgets a key).
func BenchmarkMemoryAfterIdle(b *testing.B) {
	const n = 1_000_000
	keys := keyNames(n)
	b.Run("baseline", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			bl := newBaseline(10, 1000, 10)
			for _, k := range keys {
				bl.acquire(k).release()
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/n, "bytes/key")
			runtime.KeepAlive(bl)
		}
	})
	b.Run("governor", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			g, err := New(Config{Policy: &Policy{Default: Limits{MaxConcurrency: 10, Rate: 1000, Burst: 10}}, IdleTimeout: time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for _, k := range keys {
				p, _ := g.Acquire(ctx, k)
				p.Release()
			}
			peak := heapInUse()
			for range 2 { // the first sweep restarts released keys' idle time
				time.Sleep(5 * time.Millisecond) // let the keys go idle (memory figure, not a timing)
				g.EvictIdle()
			}
			after := heapInUse()
			b.ReportMetric(float64(peak-before)/n, "peak-bytes/key")
			b.ReportMetric(float64(int64(after)-int64(before))/n, "bytes/key")
			runtime.KeepAlive(g)
		}
	})
}

var unsafeSizeofPermit = unsafe.Sizeof(Permit{})

// interleave runs base and gov alternately in chunks of 1,000 operations and
// reports each one's ns/op and their ratio: on a shared, noisy machine the
// two then see the same load, which separate sub-benchmarks do not.
func interleave(b *testing.B, base, gov func()) {
	const chunk = 1000
	var tb, tg time.Duration
	n := 0
	for b.Loop() {
		s := time.Now()
		for range chunk {
			base()
		}
		m := time.Now()
		for range chunk {
			gov()
		}
		tg += time.Since(m)
		tb += m.Sub(s)
		n += chunk
	}
	b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "baseline-ns/op")
	b.ReportMetric(float64(tg.Nanoseconds())/float64(n), "governor-ns/op")
	b.ReportMetric(float64(tg)/float64(tb), "ratio")
}

// BenchmarkInterleaved measures the single-process hot paths against the
// baseline in alternating chunks (see interleave). ns/op counts both sides
// of a chunk of 1,000 and is not meaningful; read the custom metrics.
func BenchmarkInterleaved(b *testing.B) {
	ctx := context.Background()
	const key = "ip:203.0.113.7|site:google.com"
	b.Run("acquire-release-one-key", func(b *testing.B) {
		bl := newBaseline(10, rate.Inf, 1)
		g := benchGov(b, Limits{MaxConcurrency: 10})
		b.ReportAllocs()
		interleave(b, func() { bl.acquire(key).release() }, func() {
			p, _ := g.Acquire(ctx, key)
			p.Release()
		})
	})
	b.Run("acquire-release-one-key-with-connection-rate", func(b *testing.B) {
		bl := newBaseline(10, 1e9, 1e9)
		g := benchGov(b, Limits{MaxConcurrency: 10, ConnectionRate: 1e9, ConnectionBurst: 1e9})
		interleave(b, func() {
			k := bl.get(key)
			k.lim.Allow()
			k.sem <- struct{}{}
			k.release()
		}, func() {
			p, _ := g.Acquire(ctx, key)
			p.Release()
		})
	})
	b.Run("take-one-token", func(b *testing.B) {
		bl := newBaseline(1, 1e9, 1e9)
		g := benchGov(b, Limits{Rate: 1e9, Burst: 1e9})
		interleave(b, func() { bl.get(key).lim.Allow() }, func() { _, _ = g.Take(ctx, key) })
	})
	b.Run("acquire-release-three-keys", func(b *testing.B) {
		keys := []string{"ip:203.0.113.7", "site:google.com", key}
		bl := newBaseline(10, rate.Inf, 1)
		g := benchGov(b, Limits{MaxConcurrency: 10})
		var ks [3]*baseKey
		interleave(b, func() {
			for i, k := range keys {
				ks[i] = bl.acquire(k)
			}
			for _, k := range ks {
				k.release()
			}
		}, func() {
			p, _ := g.Acquire(ctx, keys...)
			p.Release()
		})
	})
}

// The hot paths allocate nothing (a regression test, not a timing).
func TestHotPathsDoNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts only")
	}
	g, err := New(Config{Policy: &Policy{Default: Limits{MaxConcurrency: 10, Rate: 1e9, Burst: 1e9, ConnectionRate: 1e9, ConnectionBurst: 1e9}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys := []string{"ip:203.0.113.7", "site:google.com", "ip:203.0.113.7|site:google.com"}
	for name, f := range map[string]func(){
		"acquire-release-one-key": func() {
			p, _ := g.Acquire(ctx, keys[0])
			p.Release()
		},
		"acquire-release-three-keys": func() {
			p, _ := g.Acquire(ctx, keys...)
			p.Release()
		},
		"take-one-key":    func() { _, _ = g.Take(ctx, keys[0]) },
		"take-three-keys": func() { _, _ = g.Take(ctx, keys...) },
		"try-acquire": func() {
			p, _, _ := g.TryAcquire(keys[0])
			p.Release()
		},
		"feedback": func() { _ = g.Feedback(keys[2], Signal{Kind: Success}) },
	} {
		f() // create the keys first
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}
