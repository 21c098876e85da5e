package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/sluicemail/sluice/deliver"
	"github.com/sluicemail/sluice/deliver/delivertest"
	"github.com/sluicemail/sluice/governor"
)

// options are the knobs of one run.
type options struct {
	Messages int           // messages to send, spread evenly over the receivers
	Workers  int           // goroutines calling Send at once
	Latency  time.Duration // the receivers' delay before each reply
	MaxWait  time.Duration // how long one Send may wait for a connection
}

// sourceIP is the address the receivers see us sending from (TEST-NET-1;
// nothing is dialled, the in-memory dialer passes it on as our identity).
var sourceIP = netip.MustParseAddr("192.0.2.1")

// receiver is one in-process SMTP server and what happened to the
// messages we sent it.
type receiver struct {
	Domain string // recipient domain routed to it
	Limit  string // its limit, in words
	srv    *delivertest.Server

	Sent, Delivered, Deferred, Bounced int
	// Received counts the messages the receiver took in.
	Received int
	// Throttled counts throttling replies the receiver sent us (421 4.4.5,
	// TSS04...).
	Throttled int
	// MaxConns is the most connections we held open at once, refused ones
	// included; MaxConnsAfter the most once the first 421 4.4.5 was sent
	// (-1 when there was none).
	MaxConns, MaxConnsAfter int
}

// summary is the outcome of a run.
type summary struct {
	Receivers []*receiver
	Messages  int
	Elapsed   time.Duration
}

// newReceivers starts the three receivers in memory.
func newReceivers(latency time.Duration) ([]*receiver, error) {
	gmail := delivertest.Gmail() // 2 connections per IP, then 421 4.4.5
	gmail.Limits.MessageRate = delivertest.Rate{}
	gmail.Latency = delivertest.EveryCommand(latency)

	yahoo := delivertest.Yahoo() // [TSS04] deferrals when too fast
	yahoo.Limits.MessageRate = delivertest.Rate{Every: 10 * time.Millisecond, Burst: 20,
		Reply: delivertest.YahooDeferralReply, Penalty: 10 * time.Second}
	yahoo.Latency = delivertest.EveryCommand(latency)

	open := delivertest.Config{Latency: delivertest.EveryCommand(latency)}

	var rs []*receiver
	for _, r := range []struct {
		domain, limit string
		cfg           delivertest.Config
	}{
		{"gmail.test", "2 conns", gmail},
		{"yahoo.test", "5 conns, 100 msgs/s", yahoo},
		{"example.test", "none", open},
	} {
		srv, err := delivertest.NewPipeServer(r.cfg)
		if err != nil {
			closeReceivers(rs)
			return nil, err
		}
		rs = append(rs, &receiver{Domain: r.domain, Limit: r.limit, srv: srv})
	}
	return rs, nil
}

func closeReceivers(rs []*receiver) {
	for _, r := range rs {
		r.srv.Close()
	}
}

// run sends opt.Messages messages and returns what each receiver saw.
// progress, when not nil, is called once per message sent, from one
// goroutine at a time.
func run(ctx context.Context, opt options, progress func()) (*summary, error) {
	rs, err := newReceivers(opt.Latency)
	if err != nil {
		return nil, err
	}
	defer closeReceivers(rs)

	// Route each domain to its receiver, and make each domain its own site
	// (with real MX lookups, deliver derives the site from the MX hosts).
	routes := map[string][]string{}
	for _, r := range rs {
		routes[r.Domain] = []string{r.srv.Addr()}
	}

	// A deliberately generous policy: the replies will narrow it. The keys
	// "ip:<source>|site:<site>" are one sending IP towards one site.
	gov, err := governor.New(governor.Config{Policy: &governor.Policy{
		Patterns: []governor.Pattern{{
			// Yahoo's limits are known (from its postmaster pages, say): stay under them.
			Match:  "ip:*|site:yahoo.test",
			Limits: governor.Limits{MaxConcurrency: 4, Rate: 80, Burst: 10},
		}, {
			// Gmail's concurrency limit is not: start at 10 and let it teach us.
			Match:  "ip:*|site:*",
			Limits: governor.Limits{MaxConcurrency: 10},
		}},
	}})
	if err != nil {
		return nil, err
	}
	sender, err := deliver.New(deliver.Config{
		HelloName: "quickstart.example.org",
		SourceIP:  sourceIP,
		Routes:    routes,
		SiteKey:   func(domain string, _ []string) string { return domain },
		Dial:      delivertest.Dialer{}.DialSource, // in memory
		Governor:  gov,
		MaxWait:   opt.MaxWait,
	})
	if err != nil {
		return nil, err
	}

	var (
		mu   sync.Mutex
		jobs = make(chan *receiver)
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range opt.Workers {
		wg.Go(func() {
			for r := range jobs {
				status := send(ctx, sender, r)
				mu.Lock()
				switch status {
				case deliver.Delivered:
					r.Delivered++
				case deliver.Deferred:
					r.Deferred++ // a real program would queue it for RetryAt
				default:
					r.Bounced++
				}
				if progress != nil {
					progress()
				}
				mu.Unlock()
			}
		})
	}
	for i := range opt.Messages {
		r := rs[i%len(rs)]
		r.Sent++
		jobs <- r
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	// Close sends QUIT on pooled connections and releases every slot.
	if err := sender.Close(ctx); err != nil {
		return nil, err
	}
	for _, r := range rs {
		if err := r.srv.WaitIdle(ctx); err != nil {
			return nil, err
		}
		id := sourceIP.String()
		r.Received = r.srv.MessageCount()
		r.Throttled = r.srv.Throttled(id)
		r.MaxConns = r.srv.MaxConcurrency(id)
		r.MaxConnsAfter = -1
		if first, ok := r.srv.FirstReply(delivertest.CauseConcurrency); ok {
			r.MaxConnsAfter = r.srv.MaxConcurrencyAfter(id, first)
		}
	}
	return &summary{Receivers: rs, Messages: opt.Messages, Elapsed: elapsed}, nil
}

// send delivers one message to one recipient at r and returns its status.
func send(ctx context.Context, s *deliver.Sender, r *receiver) deliver.Status {
	res, err := s.Send(ctx, &deliver.Message{
		From: "newsletter@quickstart.example.org",
		To:   []string{"someone@" + r.Domain},
		Data: []byte("From: newsletter@quickstart.example.org\r\n" +
			"To: someone@" + r.Domain + "\r\n" +
			"Subject: Hello from Sluice\r\n\r\nThis message never left the process.\r\n"),
	})
	if err != nil { // only for invalid input or a closed Sender
		return deliver.Bounced
	}
	return res[0].Status
}

// print writes the summary table.
func (s *summary) print(w io.Writer) {
	const row = "%-13s %-22s %5v %9v %8v %7v %9v %9v %13v\n"
	fmt.Fprintf(w, row, "receiver", "limit", "sent", "delivered", "deferred", "bounced", "throttled", "max conns", "after 1st 421")
	var sent, delivered, deferred, bounced, throttled int
	for _, r := range s.Receivers {
		after := "-"
		if r.MaxConnsAfter >= 0 {
			after = fmt.Sprint(r.MaxConnsAfter)
		}
		fmt.Fprintf(w, row, r.Domain, r.Limit, r.Sent, r.Delivered, r.Deferred, r.Bounced, r.Throttled, r.MaxConns, after)
		sent += r.Sent
		delivered += r.Delivered
		deferred += r.Deferred
		bounced += r.Bounced
		throttled += r.Throttled
	}
	fmt.Fprintf(w, row, "total", "", sent, delivered, deferred, bounced, throttled, "", "")
	fmt.Fprintf(w, "\n%d messages in %.2fs: %.0f messages/s\n", s.Messages, s.Elapsed.Seconds(),
		float64(s.Messages)/s.Elapsed.Seconds())
	fmt.Fprint(w, `
throttled:     throttling replies the receiver sent (421 4.4.5, [TSS04]...)
max conns:     most connections we held open at once, refused ones included
after 1st 421: most connections we held open when opening one after
               gmail.test's first 421 4.4.5 (0: none was opened after it)
`)
}

func main() {
	var opt options
	flag.IntVar(&opt.Messages, "n", 500, "messages to send")
	flag.IntVar(&opt.Workers, "workers", 10, "goroutines sending at once")
	flag.DurationVar(&opt.Latency, "latency", 5*time.Millisecond, "receivers' delay before each reply")
	flag.DurationVar(&opt.MaxWait, "maxwait", time.Minute, "longest wait for a connection before a message is deferred")
	flag.Parse()

	bar := progressbar.NewOptions(opt.Messages,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription("sending"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(50*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	s, err := run(context.Background(), opt, func() { bar.Add(1) })
	bar.Finish()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	s.print(os.Stdout)
}
