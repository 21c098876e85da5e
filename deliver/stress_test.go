package deliver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
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

// Many concurrent Sends against a receiver that misbehaves in every way
// now and then: every recipient gets exactly one valid outcome, nothing
// reported delivered is missing at the receiver, and nothing is leaked
// (slots here, goroutines in TestMain).
func TestSendStress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := func(code int, enh, text string) delivertest.Reply {
			return delivertest.Reply{Code: code, Enhanced: enh, Text: text}
		}
		cfg := delivertest.Config{
			Limits: delivertest.Limits{MaxConnections: 3, MaxRecipients: 2, MaxMessagesPerConnection: 7},
			Faults: []delivertest.Fault{
				{Step: delivertest.StepConnect, Action: delivertest.ActionReply, Reply: r(421, "4.3.2", "Not now"), Skip: 2, Times: 3},
				{Step: delivertest.StepHello, Action: delivertest.ActionDrop, Skip: 4, Times: 2},
				{Step: delivertest.StepMail, Action: delivertest.ActionReply, Reply: r(451, "4.3.0", "Local error"), Skip: 5, Times: 3},
				{Step: delivertest.StepMail, Action: delivertest.ActionHang, Skip: 30, Times: 1},
				{Step: delivertest.StepRcpt, Action: delivertest.ActionDrop, Skip: 7, Times: 2},
				{Step: delivertest.StepRcpt, Action: delivertest.ActionReply, Reply: r(550, "5.1.1", "No such user"), Skip: 3, Times: 5},
				{Step: delivertest.StepData, Action: delivertest.ActionGarbage, Skip: 11, Times: 1},
				{Step: delivertest.StepBody, Action: delivertest.ActionDrop, Skip: 13, Times: 1},
				{Step: delivertest.StepDot, Action: delivertest.ActionDrop, Skip: 17, Times: 2},
				{Step: delivertest.StepDot, Action: delivertest.ActionReply, Reply: r(421, "4.4.5", "Too many connections"), Skip: 19, Times: 1},
			},
			Latency: delivertest.EveryCommand(10 * time.Millisecond),
		}
		srv := newPipeServer(t, cfg)
		gov, err := governor.New(governor.Config{Policy: &governor.Policy{Default: governor.Limits{MaxConcurrency: 6}}})
		require.NoError(t, err)
		var open, peak atomic.Int64
		h := newHarness(t, srv, func(c *Config) {
			dial := pipeDial(nil)
			c.Dial = func(ctx context.Context, network, addr string, src netip.Addr) (net.Conn, error) {
				conn, err := dial(ctx, network, addr, src)
				if err != nil {
					return nil, err
				}
				n := open.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				return &closeCounter{Conn: conn, open: &open}, nil
			}
			c.Governor = gov
			c.Routes = map[string][]string{"*": {srv.Addr(), srv.Addr()}}
			c.MaxWait = 2 * time.Minute
		})
		h.gov = gov

		type sent struct {
			to  []string
			res []Result
		}
		var mu sync.Mutex
		var all []sent
		var wg sync.WaitGroup
		for g := range 20 {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(uint64(g), 7))
				for i := range 8 {
					n := 1 + rnd.IntN(4)
					to := make([]string, n)
					for j := range to {
						to[j] = fmt.Sprintf("u%d.%d.%d@d%d.example", g, i, j, rnd.IntN(3))
					}
					res, err := h.s.Send(t.Context(), msg(to...))
					if !assert.NoError(t, err) {
						continue
					}
					mu.Lock()
					all = append(all, sent{to, res})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		h.close()
		srv.Close()

		received := map[string]int{}
		for _, m := range srv.Messages() {
			if m.Dropped {
				continue
			}
			for _, to := range m.To {
				received[to]++
			}
		}
		counts := map[Status]int{}
		reasons := map[string]int{}
		possibly := 0
		for _, s := range all {
			require.Len(t, s.res, len(s.to))
			for i, r := range s.res {
				assert.Equal(t, s.to[i], r.Recipient)
				require.Contains(t, []Status{Delivered, Deferred, Bounced}, r.Status, "%+v", r)
				counts[r.Status]++
				switch r.Status {
				case Delivered:
					assert.Equal(t, 1, received[r.Recipient], "%s delivered once", r.Recipient)
				case Deferred:
					assert.False(t, r.RetryAt.IsZero())
					reasons[fmt.Sprintf("%v | %v", r.Reply, r.Err)]++
					if r.PossiblyDelivered {
						possibly++
					}
				}
			}
		}
		t.Logf("outcomes: %d delivered, %d deferred (%d possibly delivered), %d bounced; receiver saw %d connections",
			counts[Delivered], counts[Deferred], possibly, counts[Bounced], len(srv.Connections()))
		for k, v := range reasons {
			t.Logf("%4d %s", v, k)
		}
		assert.NotZero(t, counts[Delivered])
		assert.NotZero(t, counts[Bounced])
		assert.LessOrEqual(t, peak.Load(), int64(6), "connections open at once on our side")
		assert.Zero(t, open.Load())
	})
}

// closeCounter counts open connections.
type closeCounter struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *closeCounter) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}
