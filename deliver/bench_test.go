package deliver

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

var benchData = []byte("From: a@example.org\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n" +
	"Hello, this is a short message of a few hundred bytes, as a notification would be.\r\n" +
	"It has a couple of lines.\r\n")

// BenchmarkTCPThroughput compares, in one run, sequential sends over one
// reused loopback TCP connection: a bare go-smtp client loop (raw) and
// Sender.Send (deliver), against the same accept-everything receiver.
// The goal is deliver >= 0.9 of raw, i.e. ns/op within 1/0.9.
func BenchmarkTCPThroughput(b *testing.B) {
	benchTCPThroughput(b, false)
}

// BenchmarkTCPThroughputParallel is BenchmarkTCPThroughput with four
// connections in use at once (RunParallel, 2 x GOMAXPROCS goroutines), as
// the scoreboard's scenario 3 runs: there lock contention and scheduling
// count too.
func BenchmarkTCPThroughputParallel(b *testing.B) {
	benchTCPThroughput(b, true)
}

func benchTCPThroughput(b *testing.B, parallel bool) {
	srv, err := delivertest.NewServer(delivertest.Config{DiscardData: true})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()

	b.Run("raw", func(b *testing.B) {
		dial := func() *smtp.Client {
			c, err := smtp.Dial(srv.Addr())
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Hello("sender.example.org"); err != nil {
				b.Fatal(err)
			}
			return c
		}
		send := func(c *smtp.Client) {
			if err := c.Mail("a@example.org", nil); err != nil {
				b.Fatal(err)
			}
			if err := c.Rcpt("b@example.test", nil); err != nil {
				b.Fatal(err)
			}
			w, err := c.Data()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Write(benchData); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		if parallel {
			b.SetParallelism(2)
			b.RunParallel(func(pb *testing.PB) {
				c := dial()
				defer c.Close()
				for pb.Next() {
					send(c)
				}
			})
			return
		}
		c := dial()
		defer c.Close()
		for b.Loop() {
			send(c)
		}
		b.StopTimer()
		c.Quit()
	})

	for _, mode := range []struct {
		name    string
		disable bool
	}{{"deliver", false}, {"deliver-lockstep", true}} {
		b.Run(mode.name, func(b *testing.B) { benchDeliver(b, srv, parallel, mode.disable) })
	}
}

// newBenchSender returns a Sender that sends everything to srv over
// loopback TCP, without TLS, keeping its connections for the whole run;
// mod adjusts the Config. It is closed when the benchmark ends.
func newBenchSender(b *testing.B, srv *delivertest.Server, policy *governor.Policy, mod func(*Config)) *Sender {
	b.Helper()
	gov, err := governor.New(governor.Config{Policy: policy})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{
		HelloName:          "sender.example.org",
		Routes:             map[string][]string{"*": {srv.Addr()}},
		TLS:                TLSNone,
		Governor:           gov,
		MaxMessagesPerConn: 1 << 30,
		Dial: func(ctx context.Context, network, addr string, _ netip.Addr) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// benchDeliver is the deliver side: Sender.Send with PIPELINING (the
// default, which delivertest offers) or one command per round trip, as
// go-smtp's client does.
func benchDeliver(b *testing.B, srv *delivertest.Server, parallel, disablePipelining bool) {
	s := newBenchSender(b, srv, DefaultPolicy(), func(c *Config) {
		c.MaxConnAge = 1 << 62
		c.DisablePipelining = disablePipelining
	})
	m := &Message{From: "a@example.org", To: []string{"b@example.test"}, Data: benchData}
	ctx := context.Background()
	b.ReportAllocs()
	if parallel {
		b.SetParallelism(2)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res, err := s.Send(ctx, m)
				if err != nil || res[0].Status != Delivered {
					b.Fatal(err, res)
				}
			}
		})
		return
	}
	for b.Loop() {
		res, err := s.Send(ctx, m)
		if err != nil || res[0].Status != Delivered {
			b.Fatal(err, res)
		}
	}
}
