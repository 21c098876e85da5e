package delivertest

import (
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The recording receiver against a bare go-smtp server with a discarding
// backend, in the same run, over loopback TCP: one client connection reused
// for every message (MAIL, RCPT, DATA), and in parallel one connection per
// goroutine. Compare msgs/s of the two sub-benchmarks of each pair:
//
//	go test -run '^$' -bench AcceptEverything -count 5 ./deliver/delivertest/
//
// On a shared machine the runs of one sub-benchmark follow each other, so
// load that comes and goes lands on one side: BenchmarkRecordingOverhead
// interleaves the two and is the figure to quote.
func BenchmarkAcceptEverything(b *testing.B) {
	msg := "Subject: benchmark\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16)
	servers := []struct {
		name  string
		start func(b *testing.B) (addr string, stop func())
	}{
		{"bare", startBare},
		{"delivertest", func(b *testing.B) (string, func()) {
			srv, err := NewServer(Config{})
			if err != nil {
				b.Fatal(err)
			}
			return srv.Addr(), func() { srv.Close() }
		}},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, s := range servers {
			b.Run(mode+"/"+s.name, func(b *testing.B) {
				addr, stop := s.start(b)
				defer stop()
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				if mode == "serial" {
					c := benchClient(b, addr)
					b.ResetTimer()
					for range b.N {
						benchSend(b, c, msg)
					}
					b.StopTimer()
					c.Quit()
				} else {
					b.RunParallel(func(pb *testing.PB) {
						c := benchClient(b, addr)
						for pb.Next() {
							benchSend(b, c, msg)
						}
						c.Quit()
					})
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkRecordingOverhead measures the same thing paired: rounds of two
// blocks of 20 messages, one to the bare server and one to the recording
// one (in alternating order), each on its reused connection, so that load
// from other processes hits both alike. It reports both rates over the whole
// run and the median over rounds of the per-round ratio (delivertest/bare;
// 1 is no cost), which a burst of load on one block cannot move much.
//
//	go test -run '^$' -bench RecordingOverhead -benchtime 20000x -count 5 ./deliver/delivertest/
func BenchmarkRecordingOverhead(b *testing.B) {
	msg := "Subject: benchmark\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16)
	bareAddr, stopBare := startBare(b)
	defer stopBare()
	srv, err := NewServer(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	bare, rec := benchClient(b, bareAddr), benchClient(b, srv.Addr())
	defer bare.Quit()
	defer rec.Quit()

	const block = 20
	var tBare, tRec time.Duration
	var ratios []float64
	run := func(c *smtp.Client, n int) time.Duration {
		start := time.Now()
		for range n {
			benchSend(b, c, msg)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; done, round = done+block, round+1 {
		n := min(block, b.N-done)
		var db, dr time.Duration
		if round%2 == 0 {
			db = run(bare, n)
			dr = run(rec, n)
		} else {
			dr = run(rec, n)
			db = run(bare, n)
		}
		tBare += db
		tRec += dr
		ratios = append(ratios, db.Seconds()/dr.Seconds())
	}
	b.StopTimer()
	slices.Sort(ratios)
	b.ReportMetric(float64(b.N)/tBare.Seconds(), "bare-msgs/s")
	b.ReportMetric(float64(b.N)/tRec.Seconds(), "delivertest-msgs/s")
	b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
	if srv.MessageCount() != b.N {
		b.Fatalf("recorded %d messages, sent %d", srv.MessageCount(), b.N)
	}
}

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

func startBare(b *testing.B) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	s.Domain = "bare.invalid"
	s.ErrorLog = discardLogger{}
	s.EnableSMTPUTF8 = true
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	return ln.Addr().String(), func() {
		s.Close()
		<-done
	}
}

func benchClient(b *testing.B, addr string) *smtp.Client {
	c, err := smtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Hello("bench.example"); err != nil {
		b.Fatal(err)
	}
	return c
}

func benchSend(b *testing.B, c *smtp.Client, msg string) {
	if err := sendMail(c, "a@example.org", []string{"b@example.com"}, msg); err != nil {
		b.Error(err)
	}
}
