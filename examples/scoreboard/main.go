package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/deliver"
	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// sourceIP is the sending IP the in-memory receivers see.
var sourceIP = netip.MustParseAddr("192.0.2.1")

var body = []byte("From: bench@example.org\r\nSubject: scoreboard\r\n\r\nHello.\r\n")

// congestion is a scenario where the receiver caps concurrent connections.
type congestion struct {
	Name     string
	Cap      int // connections the receiver takes at once per IP; it refuses the next
	Allowed  int // the sender's policy: MaxConcurrency of the source x site key
	Workers  int // goroutines calling Send (the sender's process limit)
	Messages int
	Latency  time.Duration // before each reply of the receiver
}

// congestionResult holds the figures of one congestion scenario.
type congestionResult struct {
	congestion
	Delivered, Bounced int
	Requeued           int     // Deferred results, retried at RetryAt as a queue would
	Throttled          int     // throttling replies the receiver sent
	MeanConcurrency    float64 // time-weighted, accepted connections only
	MaxConcurrency     int     // refused connections included
	Elapsed, Optimum   time.Duration
	PerConnection      float64 // messages/s over one connection, measured
}

func (r congestionResult) ThrottledShare() float64 {
	return float64(r.Throttled) / float64(r.Messages)
}

func (r congestionResult) VsOptimum() float64 {
	return float64(r.Elapsed) / float64(r.Optimum)
}

// newPipeReceiver starts an in-memory receiver that keeps no bodies.
func newPipeReceiver(maxConns int, latency time.Duration) (*delivertest.Server, error) {
	return delivertest.NewPipeServer(delivertest.Config{
		Limits:      delivertest.Limits{MaxConnections: maxConns},
		Latency:     delivertest.EveryCommand(latency),
		DiscardData: true,
	})
}

// newSender returns a Sender routing every domain to srv, from sourceIP,
// with every source x site key allowed the given concurrency.
func newSender(srv *delivertest.Server, allowed int) (*deliver.Sender, error) {
	gov, err := governor.New(governor.Config{Policy: &governor.Policy{Patterns: []governor.Pattern{
		{Match: "ip:*|site:*", Limits: governor.Limits{MaxConcurrency: allowed}},
	}}})
	if err != nil {
		return nil, err
	}
	return deliver.New(deliver.Config{
		HelloName: "sender.example.org",
		SourceIP:  sourceIP,
		Routes:    map[string][]string{"*": {srv.Addr()}},
		Dial:      delivertest.Dialer{}.DialSource,
		TLS:       deliver.TLSNone,
		Governor:  gov,
	})
}

func message(i int) *deliver.Message {
	return &deliver.Message{From: "bench@example.org", To: []string{fmt.Sprintf("r%d@example.test", i)}, Data: body}
}

// perConnection measures the throughput of one connection: n messages in
// a row, through deliver, to a receiver with the given latency.
func perConnection(ctx context.Context, n int, latency time.Duration) (float64, error) {
	srv, err := newPipeReceiver(0, latency)
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	s, err := newSender(srv, 1)
	if err != nil {
		return 0, err
	}
	defer s.Close(ctx)
	start := time.Now()
	for i := range n {
		res, err := s.Send(ctx, message(i))
		if err != nil {
			return 0, err
		}
		if res[0].Status != deliver.Delivered {
			return 0, fmt.Errorf("calibration: %s: %v", res[0].Status, res[0].Err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// runCongestion runs one congestion scenario. Workers pull messages from a
// queue; a Deferred message goes back in the queue at its RetryAt.
func runCongestion(ctx context.Context, sc congestion, perConn float64) (congestionResult, error) {
	r := congestionResult{congestion: sc, PerConnection: perConn}
	srv, err := newPipeReceiver(sc.Cap, sc.Latency)
	if err != nil {
		return r, err
	}
	defer srv.Close()
	s, err := newSender(srv, sc.Allowed)
	if err != nil {
		return r, err
	}

	queue := make(chan *deliver.Message, sc.Messages)
	for i := range sc.Messages {
		queue <- message(i)
	}
	var (
		pending                      atomic.Int64
		delivered, bounced, requeued atomic.Int64
		wg                           sync.WaitGroup
		errOnce                      sync.Once
		sendErr                      error
	)
	pending.Store(int64(sc.Messages))
	finish := func() {
		if pending.Add(-1) == 0 {
			close(queue)
		}
	}
	start := time.Now()
	for range sc.Workers {
		wg.Go(func() {
			for m := range queue {
				res, err := s.Send(ctx, m)
				if err != nil {
					errOnce.Do(func() { sendErr = err })
					finish()
					continue
				}
				switch res[0].Status {
				case deliver.Delivered:
					delivered.Add(1)
					finish()
				case deliver.Deferred:
					requeued.Add(1)
					m.Attempt++
					time.AfterFunc(time.Until(res[0].RetryAt), func() { queue <- m })
				default:
					bounced.Add(1)
					finish()
				}
			}
		})
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	end := time.Now()
	if err := s.Close(ctx); err != nil {
		return r, err
	}
	if sendErr != nil {
		return r, sendErr
	}
	if err := srv.WaitIdle(ctx); err != nil {
		return r, err
	}
	id := sourceIP.String()
	r.Delivered, r.Bounced, r.Requeued = int(delivered.Load()), int(bounced.Load()), int(requeued.Load())
	r.Throttled = srv.Throttled(id)
	r.MeanConcurrency = srv.MeanConcurrency(id, start, end)
	r.MaxConcurrency = srv.MaxConcurrency(id)
	r.Optimum = time.Duration(float64(sc.Messages) / (float64(sc.Cap) * perConn) * float64(time.Second))
	return r, nil
}

// throughputResult compares deliver with a bare go-smtp loop over TCP.
type throughputResult struct {
	Messages, Conns int
	// Messages per second, best of the rounds: go-smtp's client, deliver
	// with its defaults (PIPELINING, which the receiver offers), deliver
	// with DisablePipelining (one command per round trip, as go-smtp).
	Raw, Sluice, Lockstep float64
}

func (r throughputResult) Ratio() float64         { return r.Sluice / r.Raw }
func (r throughputResult) LockstepRatio() float64 { return r.Lockstep / r.Raw }

// runThroughput sends n messages over conns connections to an
// accept-everything receiver on 127.0.0.1, alternately with a bare go-smtp
// client loop and with deliver (default Config but TLS off, which this
// receiver does not offer anyway), rounds times each, and keeps the best
// round of each.
func runThroughput(ctx context.Context, n, conns, rounds int) (throughputResult, error) {
	r := throughputResult{Messages: n, Conns: conns}
	srv, err := delivertest.NewServer(delivertest.Config{DiscardData: true})
	if err != nil {
		return r, err
	}
	defer srv.Close()
	for range rounds {
		raw, err := rawLoop(srv.Addr(), n, conns)
		if err != nil {
			return r, fmt.Errorf("go-smtp loop: %w", err)
		}
		r.Raw = max(r.Raw, raw)
		sl, err := sluiceLoop(ctx, srv.Addr(), n, conns, false)
		if err != nil {
			return r, fmt.Errorf("deliver: %w", err)
		}
		r.Sluice = max(r.Sluice, sl)
		ls, err := sluiceLoop(ctx, srv.Addr(), n, conns, true)
		if err != nil {
			return r, fmt.Errorf("deliver without pipelining: %w", err)
		}
		r.Lockstep = max(r.Lockstep, ls)
	}
	return r, nil
}

// rawLoop is what a program without Sluice does: conns goroutines, each
// with one go-smtp client, sending its share of n messages in a row.
func rawLoop(addr string, n, conns int) (float64, error) {
	var wg sync.WaitGroup
	errs := make([]error, conns)
	start := time.Now()
	for w := range conns {
		wg.Go(func() {
			c, err := smtp.Dial(addr)
			if err != nil {
				errs[w] = err
				return
			}
			defer c.Close()
			if err := c.Hello("raw.example.org"); err != nil {
				errs[w] = err
				return
			}
			for i := w; i < n; i += conns {
				if err := c.SendMail("bench@example.org", []string{fmt.Sprintf("r%d@example.test", i)}, strings.NewReader(string(body))); err != nil {
					errs[w] = err
					return
				}
			}
			errs[w] = c.Quit()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / elapsed.Seconds(), nil
}

// sluiceLoop does the same through one deliver.Sender and conns goroutines
// calling Send. The site "127.0.0.1" gets DefaultPolicy's 5 connections.
// lockstep sets DisablePipelining.
func sluiceLoop(ctx context.Context, addr string, n, conns int, lockstep bool) (float64, error) {
	s, err := deliver.New(deliver.Config{
		HelloName: "sluice.example.org",
		Routes:    map[string][]string{"*": {addr}},
		TLS:       deliver.TLSNone,
		// The raw loop keeps one connection per goroutine for the whole
		// run; so does deliver here (its default re-dials every 100
		// messages), so that both sides do the same work.
		MaxMessagesPerConn: n,
		DisablePipelining:  lockstep,
	})
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for w := range conns {
		wg.Go(func() {
			for i := w; i < n; i += conns {
				res, err := s.Send(ctx, message(i))
				if err != nil || res[0].Status != deliver.Delivered {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := s.Close(ctx); err != nil {
		return 0, err
	}
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d of %d messages not delivered", f, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// board is the printed table.
type board struct {
	rows []row
}

type row struct {
	scenario, figure, value, goal string
	pass                          bool
}

func (b *board) add(scenario, figure, value, goal string, pass bool) {
	b.rows = append(b.rows, row{scenario, figure, value, goal, pass})
}

func (b *board) addCongestion(r congestionResult) {
	name := fmt.Sprintf("%s (cap %d, allowed %d)", r.Name, r.Cap, r.Allowed)
	b.add(name, "throttling replies per message", fmt.Sprintf("%.2f%% (%d)", 100*r.ThrottledShare(), r.Throttled), "< 2%", r.ThrottledShare() < 0.02)
	lo, hi := 0.9*float64(r.Cap), float64(r.Cap)
	b.add("", "mean concurrency at the receiver", fmt.Sprintf("%.2f", r.MeanConcurrency), fmt.Sprintf("%.1f-%d", lo, r.Cap),
		r.MeanConcurrency >= lo && r.MeanConcurrency <= hi)
	b.add("", "completion vs optimum", fmt.Sprintf("%.0f%% (%.1fs / %.1fs)", 100*r.VsOptimum(), r.Elapsed.Seconds(), r.Optimum.Seconds()),
		"<= 115%", r.VsOptimum() <= 1.15)
	b.add("", "delivered", fmt.Sprintf("%d of %d", r.Delivered, r.Messages), "all", r.Delivered == r.Messages)
}

func (b *board) addThroughput(r throughputResult) {
	name := fmt.Sprintf("TCP reuse vs go-smtp (%d conns)", r.Conns)
	b.add(name, "throughput ratio deliver / go-smtp", fmt.Sprintf("%.2f (%.0f / %.0f msg/s)", r.Ratio(), r.Sluice, r.Raw), ">= 0.9", r.Ratio() >= 0.9)
	b.add("", "same, deliver without PIPELINING", fmt.Sprintf("%.2f (%.0f / %.0f msg/s)", r.LockstepRatio(), r.Lockstep, r.Raw), ">= 0.9", r.LockstepRatio() >= 0.9)
}

func (b *board) print(w io.Writer) {
	const format = "%-34s %-35s %-28s %-8s %s\n"
	fmt.Fprintf(w, format, "scenario", "figure", "value", "goal", "")
	for _, r := range b.rows {
		verdict := "PASS"
		if !r.pass {
			verdict = "MISS"
		}
		fmt.Fprintf(w, format, r.scenario, r.figure, r.value, r.goal, verdict)
	}
}

func main() {
	n := flag.Int("n", 2000, "messages per congestion scenario")
	latency := flag.Duration("latency", 10*time.Millisecond, "receiver latency per command in scenarios 1 and 2")
	tcpN := flag.Int("tcp-n", 5000, "messages per round in scenario 3")
	rounds := flag.Int("rounds", 5, "rounds of each side in scenario 3 (the best of each is kept)")
	only := flag.Int("only", 0, "run only this scenario (1, 2 or 3); 0 runs all three")
	flag.Parse()
	if *only < 0 || *only > 3 {
		fmt.Fprintln(os.Stderr, "scoreboard: -only must be 1, 2 or 3 (or 0 for all)")
		os.Exit(2)
	}
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "scoreboard:", err)
		os.Exit(1)
	}

	var b board
	var notes []string
	var perConn float64
	if *only != 3 {
		fmt.Fprintf(os.Stderr, "measuring one connection's throughput at %v per command...\n", *latency)
		var err error
		if perConn, err = perConnection(ctx, 200, *latency); err != nil {
			fail(err)
		}
	}
	for i, sc := range []congestion{
		{Name: "1 Postfix", Cap: 5, Allowed: 20, Workers: 20, Messages: *n, Latency: *latency},
		{Name: "2 Gmail", Cap: 2, Allowed: 10, Workers: 10, Messages: *n, Latency: *latency},
	} {
		if *only != 0 && *only != i+1 {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s: %d messages...\n", sc.Name, sc.Messages)
		r, err := runCongestion(ctx, sc, perConn)
		if err != nil {
			fail(err)
		}
		b.addCongestion(r)
		notes = append(notes, fmt.Sprintf("%s: at most %d connections at once (refused ones included); %d Deferred results requeued",
			sc.Name, r.MaxConcurrency, r.Requeued))
	}
	if *only == 0 || *only == 3 {
		fmt.Fprintln(os.Stderr, "running 3: loopback TCP throughput...")
		tr, err := runThroughput(ctx, *tcpN, 4, max(*rounds, 1))
		if err != nil {
			fail(err)
		}
		b.addThroughput(tr)
	}

	if perConn > 0 {
		fmt.Printf("one connection: %.1f messages/s at %v per command\n\n", perConn, *latency)
	}
	b.print(os.Stdout)
	fmt.Println()
	for _, n := range notes {
		fmt.Println(n)
	}
}
