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
)

// The delivertest presets against the default policy, in fake time: every
// recipient gets one outcome, throttling replies stay rare (the rate is
// learned from them), and the default policy's concurrency per site is
// respected. Deferred counts are high for Yahoo because nothing requeues
// here: a Send whose wait for the learned rate would outlast MaxWait is
// deferred at once, and the goroutine moves on to its next message.
func TestSendPresets(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     func() delivertest.Config
		site    string
		maxConc int
	}{
		{"gmail", delivertest.Gmail, SiteGoogle, 2},
		{"yahoo", delivertest.Yahoo, SiteYahoo, 4},
		{"outlook", delivertest.Outlook, SiteMicrosoft, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := tt.cfg()
				cfg.StartTLS = false
				cfg.Latency = delivertest.EveryCommand(20 * time.Millisecond)
				srv := newPipeServer(t, cfg)
				h := newHarness(t, srv, func(c *Config) {
					c.SiteKey = func(string, []string) string { return tt.site }
				})
				var counts [4]atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for g := range 20 {
					wg.Go(func() {
						for i := range 15 {
							res, err := h.s.Send(t.Context(), msg(fmt.Sprintf("u%d.%d@%s.test", g, i, tt.name)))
							if assert.NoError(t, err) && assert.Len(t, res, 1) {
								counts[res[0].Status].Add(1)
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				synctest.Wait() // let the receiver finish its record
				t.Logf("%s: %d delivered, %d deferred, %d bounced in %v (fake); receiver: max concurrency %d, %d throttling replies, %d connections",
					tt.name, counts[Delivered].Load(), counts[Deferred].Load(), counts[Bounced].Load(), elapsed,
					srv.MaxConcurrency(delivertest.DefaultIdentity), srv.Throttled(delivertest.DefaultIdentity), len(srv.Connections()))
				require.Equal(t, int64(300), counts[Delivered].Load()+counts[Deferred].Load()+counts[Bounced].Load())
				assert.Zero(t, counts[Bounced].Load())
				assert.LessOrEqual(t, srv.MaxConcurrency(delivertest.DefaultIdentity), tt.maxConc)
				// Rate replies are learned from: few of the 300 messages meet one.
				assert.Less(t, srv.Throttled(delivertest.DefaultIdentity), 30)
				h.close()
			})
		})
	}
}
