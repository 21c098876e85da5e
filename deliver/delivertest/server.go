package delivertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"
)

// DefaultIdentity is the client identity of a pipe connection dialled without
// one; it is also what a TCP client has when it does not bind a source.
const DefaultIdentity = "127.0.0.1"

// A Server is a receiver running in this process. Create one with NewServer
// (loopback TCP) or NewPipeServer (in memory, for testing/synctest) and
// Close it when done. Its methods are safe for concurrent use, also while
// clients are connected.
type Server struct {
	cfg    Config
	domain string
	addr   string
	ln     net.Listener
	pipe   *pipeListener // nil on TCP
	smtp   *smtp.Server

	tlsServer *tls.Config
	pool      *x509.CertPool

	done      chan struct{}
	closeOnce sync.Once
	serveDone chan struct{}
	wg        sync.WaitGroup // goroutines of ours: refusals, hangs at connect

	mu       sync.Mutex
	closed   bool
	open     map[*serverConn]struct{}
	nextID   int
	clients  map[string]*clientState
	greylist map[string]time.Time
	hits     []int         // per Config.Faults entry: matches so far
	idle     chan struct{} // closed while no connection is open
	rec      record
}

type clientState struct {
	admitted     int // open connections past the greeting
	present      int // open connections, refused ones included
	connRate     *rate.Limiter
	msgRate      *rate.Limiter
	penaltyUntil time.Time
	penaltyReply Reply
}

// NewServer starts a receiver on loopback TCP (Config.Addr, default
// 127.0.0.1:0). Clients reach it at Addr; on Linux a client can bind any
// source in 127.0.0.0/8 to act as another sending IP (see DialAs).
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.validate(true); err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("delivertest: listen: %w", err)
	}
	s, err := newServer(cfg, ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.start(ln)
	return s, nil
}

// NewPipeServer starts a receiver on an in-memory listener: every connection
// is a net.Pipe, so it runs inside a testing/synctest bubble (create it
// inside the bubble, and Close it there). Clients connect with the Server's
// DialContext/DialAs, or a Dialer that routes by Addr.
func NewPipeServer(cfg Config) (*Server, error) {
	if err := cfg.validate(false); err != nil {
		return nil, err
	}
	pl, err := newPipeListener(cfg.Addr)
	if err != nil {
		return nil, err
	}
	s, err := newServer(cfg, pl.name)
	if err != nil {
		pl.Close()
		return nil, err
	}
	s.pipe = pl
	pl.srv = s
	s.start(pl)
	return s, nil
}

func newServer(cfg Config, addr string) (*Server, error) {
	cfg = cfg.clone()
	s := &Server{
		cfg:       cfg,
		domain:    cfg.Domain,
		addr:      addr,
		done:      make(chan struct{}),
		serveDone: make(chan struct{}),
		open:      make(map[*serverConn]struct{}),
		clients:   make(map[string]*clientState),
		greylist:  make(map[string]time.Time),
		hits:      make([]int, len(cfg.Faults)),
		rec:       record{stats: make(map[string]*ClientStats)},
		idle:      make(chan struct{}),
	}
	close(s.idle)
	if s.domain == "" {
		s.domain = defaultDomain
	}
	ss := smtp.NewServer(backend{s})
	ss.Domain = s.domain
	ss.ErrorLog = discardLogger{}
	ss.EnableSMTPUTF8 = true
	ss.AllowInsecureAuth = true
	ss.MaxMessageBytes = cfg.MaxMessageBytes
	ss.ReadTimeout = cfg.IdleTimeout
	if cfg.StartTLS {
		names := cfg.TLSHostnames
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil {
			names = append(names, host) // a pipe server's name, which a client may verify
		}
		tc, pool, err := newTestTLS(s.domain, names)
		if err != nil {
			return nil, err
		}
		s.tlsServer, s.pool = tc, pool
		ss.TLSConfig = tc
	}
	s.smtp = ss
	return s, nil
}

func (s *Server) start(ln net.Listener) {
	s.ln = ln
	go func() {
		defer close(s.serveDone)
		s.smtp.Serve(&listener{Listener: ln, s: s})
	}()
}

// Addr returns the address clients dial: "127.0.0.1:port" on TCP, the pipe
// name on the in-memory listener.
func (s *Server) Addr() string { return s.addr }

// Domain returns the name the receiver greets with.
func (s *Server) Domain() string { return s.domain }

// Close closes the listener and every connection, and returns once every
// goroutine the Server started has ended. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)

		s.ln.Close()
		if s.pipe != nil {
			unregisterPipe(s.pipe.name)
		}
		// Serve has returned before Shutdown runs, so that go-smtp's
		// WaitGroup sees no Add during its Wait. Shutdown then waits for
		// go-smtp's connection goroutines, which end because their
		// connections are closed.
		<-s.serveDone
		s.mu.Lock()
		conns := make([]*serverConn, 0, len(s.open))
		for c := range s.open {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		s.smtp.Shutdown(context.Background())
		s.wg.Wait()
	})
	return nil
}

// sleep waits d, or less if the server closes; it reports whether the full
// delay passed.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// CertPool returns the pool that trusts the test certificate (nil without
// Config.StartTLS).
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// ClientTLSConfig returns a client configuration that trusts the test
// certificate, with ServerName set to Domain (nil without Config.StartTLS).
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.pool == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.pool, ServerName: s.domain, MinVersion: tls.VersionTLS12}
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// listener admits or refuses each connection before go-smtp sees it: go-smtp
// writes its greeting unconditionally and only calls the backend at EHLO, so
// a greeting-time refusal (Gmail's 421 4.4.5) has to happen here.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.s.admit(raw); c != nil {
			return c, nil
		}
	}
}

// admit records a new connection and returns it when go-smtp should serve
// it; otherwise it has started a goroutine that refuses it, and returns nil.
func (s *Server) admit(raw net.Conn) *serverConn {
	client := identityOf(raw.RemoteAddr())

	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now() // under the lock: events stay in time order
	if s.closed {
		raw.Close()
		return nil
	}
	s.nextID++
	c := &serverConn{Conn: raw, s: s, id: s.nextID, client: client}
	s.open[c] = struct{}{}
	c.rec = s.rec.conns.add(Connection{ID: c.id, Client: client, Start: now})
	s.rec.events.add(connEvent{now, s.rec.next(), client, +1})
	st := s.rec.client(client)
	st.Connections++
	cs := s.clientLocked(client)
	cs.present++
	st.MaxConcurrency = max(st.MaxConcurrency, cs.present)
	s.rec.openAll++
	if s.rec.openAll == 1 {
		s.idle = make(chan struct{})
	}
	s.rec.maxAll = max(s.rec.maxAll, s.rec.openAll)

	var refusal *Reply
	var cause Cause
	action := ActionReply
	if f := s.matchFaultLocked(StepConnect, client, ""); f != nil {
		action, cause = f.Action, CauseFault
		r := f.Reply
		refusal = &r
	} else if r, cz, refused := s.connectLimitsLocked(cs, client, now); refused {
		refusal, cause = &r, cz
	}
	if refusal == nil {
		cs.admitted++
		c.admitted = true
		return c
	}
	c.rec.Refused = true
	st.Refused++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer c.Close()
		switch action {
		case ActionReply:
			c.cause = cause
			c.Write(refusal.wire(client))
		case ActionGarbage:
			c.writeGarbage()
		case ActionHang:
			io.Copy(io.Discard, c.Conn)
		case ActionDrop:
		}
	}()
	return nil
}

func (s *Server) clientLocked(client string) *clientState {
	cs := s.clients[client]
	if cs == nil {
		cs = &clientState{}
		s.clients[client] = cs
	}
	return cs
}

// connectLimitsLocked applies, in order, a running penalty, the connection
// rate (every attempt takes a token) and the concurrency cap.
func (s *Server) connectLimitsLocked(cs *clientState, client string, now time.Time) (Reply, Cause, bool) {
	lim := s.cfg.limitsFor(client)
	if now.Before(cs.penaltyUntil) {
		return cs.penaltyReply, CausePenalty, true
	}
	if r := lim.ConnectionRate; r.enabled() {
		if cs.connRate == nil {
			cs.connRate = rate.NewLimiter(rate.Every(r.Every), r.burst())
		}
		if !cs.connRate.AllowN(now, 1) {
			reply := r.Reply.or(DefaultConnectionRateReply)
			if r.Penalty > 0 {
				cs.penaltyUntil, cs.penaltyReply = now.Add(r.Penalty), reply
			}
			return reply, CauseConnectionRate, true
		}
	}
	if lim.MaxConnections > 0 && cs.admitted >= lim.MaxConnections {
		return lim.ConnectionsReply.or(DefaultConnectionsReply), CauseConcurrency, true
	}
	return Reply{}, CauseNone, false
}

// messageLimitsLocked applies at MAIL FROM a running penalty, the per
// connection cap and the message rate.
func (s *Server) messageLimitsLocked(c *serverConn, now time.Time) (Reply, Cause, bool) {
	cs := s.clientLocked(c.client)
	lim := s.cfg.limitsFor(c.client)
	if now.Before(cs.penaltyUntil) {
		return cs.penaltyReply, CausePenalty, true
	}
	if lim.MaxMessagesPerConnection > 0 && c.rec.Messages >= lim.MaxMessagesPerConnection {
		return lim.MaxMessagesReply.or(DefaultMaxMessagesReply), CauseMaxMessages, true
	}
	if r := lim.MessageRate; r.enabled() {
		if cs.msgRate == nil {
			cs.msgRate = rate.NewLimiter(rate.Every(r.Every), r.burst())
		}
		if !cs.msgRate.AllowN(now, 1) {
			reply := r.Reply.or(DefaultMessageRateReply)
			if r.Penalty > 0 {
				cs.penaltyUntil, cs.penaltyReply = now.Add(r.Penalty), reply
			}
			return reply, CauseMessageRate, true
		}
	}
	return Reply{}, CauseNone, false
}

// matchFaultLocked returns the first fault that fires now, counting matches.
func (s *Server) matchFaultLocked(step Step, client, rcpt string) *Fault {
	for i := range s.cfg.Faults {
		f := &s.cfg.Faults[i]
		if f.Step != step || (f.Client != "" && f.Client != client) || (f.Recipient != "" && f.Recipient != rcpt) {
			continue
		}
		s.hits[i]++
		n := s.hits[i]
		if n <= f.Skip || (f.Times > 0 && n > f.Skip+f.Times) {
			continue
		}
		return f
	}
	return nil
}

func (s *Server) connClosed(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	delete(s.open, c)
	c.rec.End = now
	s.rec.events.add(connEvent{now, s.rec.next(), c.client, -1})
	cs := s.clientLocked(c.client)
	cs.present--
	if c.admitted {
		cs.admitted--
	}
	s.rec.openAll--
	if s.rec.openAll == 0 {
		close(s.idle)
	}
}

// WaitIdle waits until every connection the server has accepted is closed
// (a client's QUIT returns before the server has closed its side), or ctx
// is done.
func (s *Server) WaitIdle(ctx context.Context) error {
	s.mu.Lock()
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) recordReply(c *serverConn, code int, enhanced, text string, cause Cause) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.rec.replies.add(RecordedReply{
		Time: now, ConnID: c.id, Client: c.client, Code: code, Enhanced: enhanced, Text: text, Cause: cause,
		Seq: s.rec.next(),
	})
	st := s.rec.client(c.client)
	if cause.Throttling() {
		st.Throttled++
	}
	if cause == CauseGreylist {
		st.Greylisted++
	}
}

// serverConn is the server side of one connection. Write and the parse
// state are used only by the goroutine serving the connection.
type serverConn struct {
	net.Conn // the raw connection, under any TLS
	s        *Server
	id       int
	rec      *Connection // its record; guarded by s.mu
	client   string
	admitted bool

	closeOnce sync.Once

	greeted    bool
	encrypted  bool // STARTTLS began: the wire is no longer readable
	nreplies   int
	partial    []byte
	lines      []string
	cause      Cause // of the reply being written
	closeAfter bool  // close once the reply being written is complete
	closeLines int   // encrypted: close after this many more writes
	midLine    bool  // Config.NoPipelining: the bytes written end inside a line
}

func (c *serverConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.s.connClosed(c) })
	return err
}

func (c *serverConn) Write(p []byte) (int, error) {
	if !c.greeted {
		c.greeted = true
		if !c.s.sleep(c.s.cfg.Latency.Greeting) {
			return 0, net.ErrClosed
		}
	}
	w := p
	if c.s.cfg.NoPipelining && !c.encrypted {
		w = c.dropPipelining(p)
		if len(w) == 0 {
			// All of p dropped: go-smtp must see it written, and the
			// record must not see it at all.
			return len(p), nil
		}
	}
	n, err := c.Conn.Write(w)
	if err != nil {
		if len(w) != len(p) {
			n = 0 // n counts w's bytes, not p's
		}
		return n, err
	}
	if c.encrypted {
		if c.closeLines > 0 {
			c.closeLines--
			if c.closeLines == 0 {
				c.Close()
			}
		}
		return n, nil
	}
	c.parse(w)
	return len(p), nil
}

// dropPipelining returns p without the EHLO capability line
// "250-PIPELINING\r\n" (keyword in any case), for Config.NoPipelining; p
// itself when there is none. p may hold several lines: only that one goes.
// A line counts only when it starts and ends within p (go-smtp writes whole
// lines, one per Write): one split across Writes is left alone.
//
// Only the "250-" form is dropped. A last line "250 PIPELINING" would need
// the '-' of the line before turned into ' ', and that line has been
// written already; go-smtp lists PIPELINING first of its capabilities,
// never last, so that form does not occur and is left alone.
func (c *serverConn) dropPipelining(p []byte) []byte {
	var out []byte // nil until a line is dropped
	for start := 0; start < len(p); {
		end := len(p)
		i := bytes.IndexByte(p[start:], '\n')
		if i >= 0 {
			end = start + i + 1
		}
		line := p[start:end]
		if i >= 0 && !c.midLine && isPipeliningLine(line) {
			if out == nil {
				out = append(make([]byte, 0, len(p)), p[:start]...)
			}
		} else {
			if out != nil {
				out = append(out, line...)
			}
			c.midLine = i < 0
		}
		start = end
	}
	if out == nil {
		return p
	}
	return out
}

// isPipeliningLine reports whether line, with its line ending, is the
// capability line "250-PIPELINING" (case-insensitive, as EHLO keywords are).
func isPipeliningLine(line []byte) bool {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return bytes.EqualFold(line, []byte("250-PIPELINING"))
}

// parse records the replies in the bytes written (go-smtp flushes one line
// per Write, but nothing here depends on that).
func (c *serverConn) parse(p []byte) {
	if len(c.partial) == 0 && len(c.lines) == 0 && len(p) >= 5 && p[3] == ' ' &&
		bytes.IndexByte(p, '\n') == len(p)-1 {
		// The usual case: one whole single-line reply.
		c.parseLine(string(bytes.TrimSuffix(p[:len(p)-1], []byte{'\r'})))
		return
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			return
		}
		line := string(bytes.TrimSuffix(c.partial[:i], []byte{'\r'}))
		c.partial = c.partial[i+1:]
		if c.parseLine(line) {
			c.partial = nil
			return
		}
	}
}

// parseLine takes one line of a reply; it reports whether the wire turned
// to TLS after it.
func (c *serverConn) parseLine(line string) (encrypted bool) {
	code, final, rest, ok := parseReplyLine(line)
	if !ok {
		c.lines = c.lines[:0]
		c.finish(0, "", line)
		return false
	}
	c.lines = append(c.lines, rest)
	if !final {
		return false
	}
	var enhanced, text string
	if len(c.lines) == 1 {
		enhanced, text = splitEnhanced(rest)
	} else {
		var b strings.Builder
		for j, l := range c.lines {
			e, t := splitEnhanced(l)
			if j > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(t)
			enhanced = e
		}
		text = b.String()
	}
	c.lines = c.lines[:0]
	c.finish(code, enhanced, text)
	if code == 220 && c.nreplies > 1 {
		c.encrypted = true // go-smtp's "220 Ready to start TLS"
		return true
	}
	return false
}

func (c *serverConn) finish(code int, enhanced, text string) {
	c.nreplies++
	cause := c.cause
	c.cause = CauseNone
	c.s.recordReply(c, code, enhanced, text, cause)
	if c.closeAfter {
		c.closeAfter = false
		c.Close()
	}
}

// hang reads and discards until the client or the server closes.
func (c *serverConn) hang() {
	io.Copy(io.Discard, c.Conn)
	c.Close()
}

var errAborted = errors.New("delivertest: connection aborted by a fault")
