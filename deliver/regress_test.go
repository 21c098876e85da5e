package deliver

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// A policy's Jitter spreads message sends: 20 sends at once under a 10 min
// Jitter reach the receiver across those 10 min, not all at the start. (The
// governor's TryTake applies no jitter, so deliver must take message tokens
// with the blocking Take.)
func TestSendAppliesPolicyJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newPipeServer(t, delivertest.Config{})
		const jitter = 10 * time.Minute
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{Jitter: jitter}}})
		require.NoError(t, err)
		h := newHarness(t, srv, func(c *Config) {
			c.Governor = gov
			c.MaxWait = 2 * jitter
		})
		h.gov = gov
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("u%d@example.test", i)))
				if assert.NoError(t, err) {
					assert.Equal(t, Delivered, res[0].Status, "%v", res[0])
				}
			})
		}
		wg.Wait()
		msgs := srv.Messages()
		require.Len(t, msgs, 20)
		var late, firstHalf int
		for _, m := range msgs {
			d := m.Time.Sub(start)
			assert.Less(t, d, jitter+time.Minute, "sent after the jitter interval")
			if d >= time.Second {
				late++
			}
			if d < jitter/2 {
				firstHalf++
			}
		}
		// With 20 uniform draws in [0, 10 min), P(any < 1 s) < 4%, and
		// P(all in one half) ~ 2e-6: these bounds hold for any seed
		// except vanishingly rarely.
		assert.GreaterOrEqual(t, late, 18, "sends delayed by the jitter")
		assert.Positive(t, firstHalf, "sends in the first half of the interval")
		assert.Less(t, firstHalf, 20, "sends in the second half of the interval")
		h.close()
	})
}
