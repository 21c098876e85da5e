package deliver

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// BenchmarkManySenders sends b.N messages from g goroutines through 2
// connections (the site's limit) to an accept-everything receiver over
// loopback TCP: the cost per message of many Sends waiting for few
// connections. ns/op should not grow with g.
func BenchmarkManySenders(b *testing.B) {
	srv, err := delivertest.NewServer(delivertest.Config{DiscardData: true})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for _, g := range []int{2, 16, 256, 2048} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			s := newBenchSender(b, srv, &governor.Policy{Default: governor.Limits{MaxConcurrency: 2}},
				func(c *Config) { c.MaxWait = -1 })
			m := &Message{From: "a@example.org", To: []string{"b@example.test"}, Data: benchData}
			work := make(chan struct{}, b.N)
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range g {
				wg.Go(func() {
					for range work {
						res, err := s.Send(context.Background(), m)
						if err != nil || res[0].Status != Delivered {
							b.Error(err, res)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
