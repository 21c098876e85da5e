package deliver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

func woken(w *poolWaiter) bool {
	select {
	case <-w.ch:
		return true
	default:
		return false
	}
}

// A session put back goes to the first waiter that can use it, and to
// that one only; a wake-up for a learned limit goes to the first waiter
// held by one, and is passed on when that waiter stops waiting.
func TestPoolHandsOffToOneWaiter(t *testing.T) {
	s := &Sender{idleTimeout: time.Minute, maxPerConn: 100, maxConnAge: time.Hour}
	pl := newPool(s)
	k := poolKey{site: "example.test"}
	rtA := &route{site: "example.test", hosts: []routeHost{{name: "a", addr: "a:25"}}}
	rtB := &route{site: "example.test", hosts: []routeHost{{name: "b", addr: "b:25"}}}
	newSession := func() *session {
		return &session{s: s, host: routeHost{name: "a", addr: "a:25"}, site: k.site, created: time.Now()}
	}

	ss0, wB := pl.takeOrWait(k, rtB) // cannot use a session to host a
	require.Nil(t, ss0)
	_, w1 := pl.takeOrWait(k, rtA)
	_, w2 := pl.takeOrWait(k, rtA)

	ss := newSession()
	pl.put(ss)
	assert.False(t, woken(wB), "a waiter that cannot use the session")
	require.True(t, woken(w1), "the first waiter that can")
	assert.False(t, woken(w2), "only one waiter")
	assert.Same(t, ss, pl.leave(k, w1, false))
	idle, w := pl.takeOrWait(k, rtA)
	assert.Nil(t, idle, "handed over, not idle")
	assert.Nil(t, pl.leave(k, w, false))

	// w2 gives up: it leaves the queue; the next session goes idle.
	assert.Nil(t, pl.leave(k, w2, false))
	ss2 := newSession()
	pl.put(ss2)
	assert.False(t, woken(wB))
	idle, w = pl.takeOrWait(k, rtA)
	assert.Same(t, ss2, idle)
	assert.Nil(t, w)

	// Learned-limit wake-ups: only to waiters held by one, passed on when
	// the woken one does not act on it.
	_, w3 := pl.takeOrWait(k, rtA)
	_, w4 := pl.takeOrWait(k, rtA)
	pl.wake(k)
	assert.False(t, woken(wB) || woken(w3) || woken(w4), "nobody is held by a learned limit")
	pl.heldByLearned(w3)
	pl.heldByLearned(w4)
	pl.wake(k)
	require.True(t, woken(w3))
	assert.False(t, woken(w4))
	assert.Nil(t, pl.leave(k, w3, false)) // gives up: passes the wake-up on
	assert.True(t, woken(w4))
	assert.Nil(t, pl.leave(k, w4, true))

	// Close wakes everyone still waiting.
	pl.drain()
	assert.True(t, woken(wB))
	assert.Nil(t, pl.leave(k, wB, false))
	assert.Empty(t, pl.waiters)
}

// Many Sends for one connection: each returned connection goes to the
// next waiter, every message is delivered over that one connection.
func TestSendManyWaitersOneConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{DiscardData: true, Latency: delivertest.EveryCommand(time.Millisecond)})
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 1}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) { c.Governor = gov; c.MaxWait = -1; c.MaxMessagesPerConn = 1000 })
		h.gov = gov
		var wg sync.WaitGroup
		var delivered atomic.Int64
		for i := range 200 {
			wg.Go(func() {
				res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("r%d@example.test", i)))
				if assert.NoError(t, err) && assert.Equal(t, Delivered, res[0].Status, "%+v", res[0]) {
					delivered.Add(1)
				}
			})
		}
		wg.Wait()
		assert.Equal(t, int64(200), delivered.Load())
		assert.Len(t, srv.Connections(), 1)
		assert.Equal(t, 200, srv.MessageCount())
		h.close()
	})
}
