package delivertest

import (
	"iter"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Cause says which behaviour of the receiver produced a reply.
type Cause int

const (
	CauseNone           Cause = iota // an ordinary reply (greeting, 250, go-smtp's own errors)
	CauseConcurrency                 // Limits.MaxConnections
	CauseConnectionRate              // Limits.ConnectionRate
	CauseMessageRate                 // Limits.MessageRate
	CausePenalty                     // a Rate's Penalty after it tripped
	CauseMaxMessages                 // Limits.MaxMessagesPerConnection
	CauseMaxRecipients               // Limits.MaxRecipients
	CauseGreylist                    // Config.Greylist
	CauseRecipient                   // Config.Recipients
	CauseFault                       // Config.Faults
)

var causeNames = [...]string{"none", "concurrency", "connection_rate", "message_rate", "penalty", "max_messages", "max_recipients", "greylist", "recipient", "fault"}

func (c Cause) String() string {
	if c >= 0 && int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "Cause(" + strconv.Itoa(int(c)) + ")"
}

// Throttling reports whether c is a throttling reply: the receiver refused
// because the client went too fast or too wide, not because of the message.
func (c Cause) Throttling() bool {
	switch c {
	case CauseConcurrency, CauseConnectionRate, CauseMessageRate, CausePenalty:
		return true
	}
	return false
}

// Connection is one connection as the receiver saw it.
type Connection struct {
	ID      int
	Client  string    // the client's identity
	Start   time.Time // accepted
	End     time.Time // closed; zero while open
	Refused bool      // answered a refusal instead of the greeting (limits or a StepConnect fault)
	TLS     bool      // STARTTLS completed
	User    string    // authenticated with AUTH, if any
	// Messages counts the messages accepted on it.
	Messages int
}

// Open reports whether the connection is still open.
func (c Connection) Open() bool { return c.End.IsZero() }

// Message is one message the receiver took in.
type Message struct {
	ConnID int
	Client string
	From   string
	To     []string
	Data   []byte // nil with Config.DiscardData
	Time   time.Time
	// Dropped: the whole body and final dot arrived but the receiver
	// dropped or hung the connection, or answered garbage, instead of a
	// reply (a StepDot fault), so the client cannot know it was delivered.
	Dropped bool
}

// RecordedReply is one reply the receiver wrote.
type RecordedReply struct {
	Time     time.Time
	ConnID   int
	Client   string
	Code     int    // 0 for a line that is not a reply (ActionGarbage)
	Enhanced string // from the last line; empty if none
	Text     string // lines joined by "\n", codes removed
	Cause    Cause
	// Seq orders replies and connection events, also within one instant
	// of fake time (see MaxConcurrencyAfter).
	Seq int
}

// Reply returns r as a Reply.
func (r RecordedReply) Reply() Reply { return Reply{Code: r.Code, Enhanced: r.Enhanced, Text: r.Text} }

// ClientStats sums up what one client did.
type ClientStats struct {
	Connections    int // accepted, including refused ones
	Refused        int // refused at connect
	Messages       int // accepted messages (Dropped ones excluded)
	Throttled      int // throttling replies (Cause.Throttling)
	Greylisted     int
	MaxConcurrency int // the most connections it held open at once, refused ones included
}

// record is the state behind the Server's read methods; every field is
// guarded by Server.mu.
type record struct {
	conns    chunked[Connection]
	messages chunked[Message]
	replies  chunked[RecordedReply]
	stats    map[string]*ClientStats
	maxAll   int
	openAll  int
	accepted int                // messages, Dropped excluded
	events   chunked[connEvent] // opens and closes, in order
	seq      int                // orders events and replies
}

// chunked is an append-only list in fixed-size chunks: appending never
// copies what is stored (a long run records hundreds of thousands of
// replies), and pointers to elements stay valid.
type chunked[T any] struct {
	chunks [][]T
	n      int
}

const chunkLen = 1024

func (c *chunked[T]) add(v T) *T {
	if c.n%chunkLen == 0 {
		c.chunks = append(c.chunks, make([]T, 0, chunkLen))
	}
	last := &c.chunks[len(c.chunks)-1]
	*last = append(*last, v)
	c.n++
	return &(*last)[len(*last)-1]
}

func (c *chunked[T]) all() iter.Seq[*T] {
	return func(yield func(*T) bool) {
		for _, ch := range c.chunks {
			for i := range ch {
				if !yield(&ch[i]) {
					return
				}
			}
		}
	}
}

func (c *chunked[T]) clone() []T {
	out := make([]T, 0, c.n)
	for _, ch := range c.chunks {
		out = append(out, ch...)
	}
	return out
}

func (r *record) next() int {
	r.seq++
	return r.seq
}

type connEvent struct {
	at     time.Time
	seq    int
	client string
	delta  int
}

func (r *record) client(id string) *ClientStats {
	st := r.stats[id]
	if st == nil {
		st = &ClientStats{}
		r.stats[id] = st
	}
	return st
}

// Connections returns every connection accepted so far, in order.
func (s *Server) Connections() []Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec.conns.clone()
}

// Messages returns every message taken in so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.rec.messages.clone()
	for i := range out {
		out[i].To = slices.Clone(out[i].To)
	}
	return out
}

// Replies returns every reply written so far, in order.
func (s *Server) Replies() []RecordedReply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec.replies.clone()
}

// MessageCount returns the number of messages accepted (Dropped excluded).
func (s *Server) MessageCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec.accepted
}

// Received returns the accepted messages (Dropped excluded) that had rcpt
// among their recipients.
func (s *Server) Received(rcpt string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if !m.Dropped && slices.Contains(m.To, rcpt) {
			out = append(out, m)
		}
	}
	return out
}

// Stats returns the sums for one client identity.
func (s *Server) Stats(client string) ClientStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.rec.stats[client]; st != nil {
		return *st
	}
	return ClientStats{}
}

// Clients returns the sums for every client seen.
func (s *Server) Clients() map[string]ClientStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]ClientStats, len(s.rec.stats))
	for id, st := range s.rec.stats {
		out[id] = *st
	}
	return out
}

// ClientNames returns the identities seen, sorted.
func (s *Server) ClientNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.rec.stats))
	for id := range s.rec.stats {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// MaxConcurrency returns the most connections client held open at once,
// refused ones included (a sender that trips a cap of 2 shows 3). The empty
// client means all clients together.
func (s *Server) MaxConcurrency(client string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if client == "" {
		return s.rec.maxAll
	}
	if st := s.rec.stats[client]; st != nil {
		return st.MaxConcurrency
	}
	return 0
}

// MaxConcurrencySince returns the most connections client held open at once
// at or after t (the empty client means all clients), e.g. since the first
// congestion reply. Connections are replayed in the order the server saw
// them open and close, so it also holds in fake time, where many events
// share one instant.
func (s *Server) MaxConcurrencySince(client string, t time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	open, peak := 0, 0
	for e := range s.rec.events.all() {
		if client != "" && e.client != client {
			continue
		}
		open += e.delta
		if e.at.Before(t) {
			peak = open // open at t, so far
		} else {
			peak = max(peak, open)
		}
	}
	return peak
}

// MaxConcurrencyAfter returns the most connections client held open at
// once (refused ones included) when it opened a connection after the reply
// r was written; 0 if it opened none. The empty client means all clients.
// Unlike MaxConcurrencySince it orders by event, not by time, so it answers
// "did the sender open more connections than the receiver allows after it
// was told so?" also in fake time, where the reply and the sender's reaction
// share an instant.
func (s *Server) MaxConcurrencyAfter(client string, r RecordedReply) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	open, peak := 0, 0
	for e := range s.rec.events.all() {
		if client != "" && e.client != client {
			continue
		}
		open += e.delta
		if e.seq > r.Seq && e.delta > 0 {
			peak = max(peak, open)
		}
	}
	return peak
}

// MeanConcurrency returns the time-weighted mean number of connections
// client held open past the greeting (refused ones are left out) between
// from and to; a zero to means now. The empty client means all clients. It
// is the figure Postfix's SCHEDULER_README reports for its concurrency
// experiments.
func (s *Server) MeanConcurrency(client string, from, to time.Time) float64 {
	if to.IsZero() {
		to = time.Now()
	}
	if !to.After(from) {
		return 0
	}
	var open time.Duration
	for _, c := range s.Connections() {
		if c.Refused || (client != "" && c.Client != client) {
			continue
		}
		start, end := c.Start, c.End
		if end.IsZero() || end.After(to) {
			end = to
		}
		if start.Before(from) {
			start = from
		}
		if end.After(start) {
			open += end.Sub(start)
		}
	}
	return open.Seconds() / to.Sub(from).Seconds()
}

// Throttled returns the number of throttling replies (Cause.Throttling) sent
// to client; the empty client means all.
func (s *Server) Throttled(client string) int {
	return s.count(client, func(r RecordedReply) bool { return r.Cause.Throttling() })
}

// CountCause returns the number of replies with cause c sent to client; the
// empty client means all.
func (s *Server) CountCause(client string, c Cause) int {
	return s.count(client, func(r RecordedReply) bool { return r.Cause == c })
}

// CountCode returns the number of replies with basic code code sent to
// client; the empty client means all.
func (s *Server) CountCode(client string, code int) int {
	return s.count(client, func(r RecordedReply) bool { return r.Code == code })
}

// FirstReply returns the first reply with cause c (any client), and false if
// there is none yet.
func (s *Server) FirstReply(c Cause) (RecordedReply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.rec.replies.all() {
		if r.Cause == c {
			return *r, true
		}
	}
	return RecordedReply{}, false
}

func (s *Server) count(client string, match func(RecordedReply) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for r := range s.rec.replies.all() {
		if (client == "" || r.Client == client) && match(*r) {
			n++
		}
	}
	return n
}

// parseReplyLines turns the lines of one reply into a RecordedReply's code,
// enhanced code and text. ok is false for a line that is not a reply.
func parseReplyLine(line string) (code int, final bool, rest string, ok bool) {
	if len(line) < 3 {
		return 0, false, line, false
	}
	n, err := strconv.Atoi(line[:3])
	if err != nil || n < 100 || n > 599 {
		return 0, false, line, false
	}
	switch {
	case len(line) == 3:
		return n, true, "", true
	case line[3] == ' ':
		return n, true, line[4:], true
	case line[3] == '-':
		return n, false, line[4:], true
	}
	return 0, false, line, false
}

// splitEnhanced removes a leading enhanced code from a reply line's text.
func splitEnhanced(text string) (enhanced, rest string) {
	head, tail, _ := strings.Cut(text, " ")
	if isEnhanced(head) {
		return head, tail
	}
	return "", text
}
