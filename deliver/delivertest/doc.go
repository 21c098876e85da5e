// Package delivertest provides SMTP receivers that run in the test process
// and throttle like Gmail, Yahoo and Microsoft do, for testing code that
// delivers mail. It is to deliver what net/http/httptest is to net/http.
//
// A Server is a go-smtp server with a backend that applies configurable
// behaviours and records everything it sees:
//
//	srv, err := delivertest.NewServer(delivertest.Gmail())
//	if err != nil { ... }
//	defer srv.Close()
//	// send through srv.Addr(), then look at srv.Messages(), srv.Stats(ip)...
//
// # Listeners and identities
//
// NewServer listens on loopback TCP (127.0.0.1:0 unless Config.Addr says
// otherwise). NewPipeServer listens in memory: each connection is a
// net.Pipe, so the server and its clients can run inside a testing/synctest
// bubble, where sleeps, latencies, token buckets and timeouts run on the
// bubble's fake clock (create and Close the server inside the bubble).
//
// Every behaviour is keyed by the client's identity, the sending IP a real
// receiver would see. On TCP it is the connection's source IP: on Linux all
// of 127.0.0.0/8 is loopback, so a client that binds 127.0.0.2 (net.Dialer's
// LocalAddr) is a second sending IP. On pipes it is a name the client passes
// when dialling. The dialers fit any dial hook with net.Dialer.DialContext's
// signature:
//
//   - Server.DialContext dials that server whatever the address, as the
//     identity in the context (WithIdentity), else DefaultIdentity;
//   - Server.DialAs(identity) returns such a function bound to an identity;
//   - Dialer{Identity: ...}.DialContext routes by address: a pipe server's
//     Addr reaches it in memory, a loopback host:port is dialled over TCP
//     (bound to the identity), so one hook serves several receivers;
//   - Server.Client(identity) returns a go-smtp client, for tests.
//
// A test of a sender in fake time:
//
//	synctest.Test(t, func(t *testing.T) {
//		srv, err := delivertest.NewPipeServer(delivertest.Gmail())
//		require.NoError(t, err)
//		defer srv.Close()
//		dial := delivertest.Dialer{Identity: "192.0.2.1"}.DialContext
//		// ... a sender using dial, routed to srv.Addr() ...
//		first, ok := srv.FirstReply(delivertest.CauseConcurrency)
//		if ok {
//			assert.LessOrEqual(t, srv.MaxConcurrencyAfter("192.0.2.1", first), 2)
//		}
//	})
//
// # Behaviours
//
// The zero Config accepts everything. Behaviours combine; those in Limits
// apply to each identity separately (Config.Clients overrides them per
// identity):
//
//   - a concurrency cap: the connection over Limits.MaxConnections gets a
//     refusal (Gmail: 421 4.4.5) instead of the greeting, and is closed;
//   - token buckets on connections (checked at connect) and on messages
//     (checked at MAIL FROM), each with its reply and an optional penalty
//     during which everything from that identity is refused;
//   - messages per connection and recipients per message (452 4.5.3);
//   - greylisting of (identity, sender, recipient) triples (451 4.7.1);
//   - scripted replies per recipient (Config.Recipients, or Faults with a
//     Recipient filter for replies that change over time);
//   - a latency per command;
//   - faults at any step of the session (Step): a reply (a 421 also
//     closes), a drop, a hang, garbage; with filters and counts;
//   - STARTTLS with a certificate generated at start (ClientTLSConfig
//     trusts it), AUTH PLAIN (Config.Users), a size limit, an idle timeout;
//   - a receiver without PIPELINING (Config.NoPipelining: EHLO does not
//     offer it, though commands sent pipelined anyway are still answered;
//     not with STARTTLS, whose EHLO reply is encrypted).
//
// Gmail, Yahoo and Outlook return preset Configs with the providers' codes
// and texts; their documentation says which figures are published and which
// are illustrative. Defaults for replies a Config leaves zero are the
// Default*Reply variables. Any reply text may quote the client's identity
// with "{client}".
//
// go-smtp greets before it consults its backend, so refusals at connect are
// written by this package, with the enhanced code on every line as Gmail
// does; replies go-smtp writes carry it on the last line only. Both layouts
// exist in the wild, and a client should read both.
//
// # Defaults
//
// Where a Config field is zero:
//
//   - Addr: 127.0.0.1:0 on TCP (a free port); "pipe-N.delivertest.invalid:25"
//     for a pipe server. Domain: "mx.delivertest.invalid" (RFC 2606 names).
//   - Limits: none. Rate.Burst 0 is 1. Greylist.Delay 0 is off (postgrey's
//     own default is 5 minutes).
//   - DefaultConnectionsReply 421 4.4.5 (RFC 3463 "mail system congestion",
//     as Gmail uses it); DefaultConnectionRateReply and
//     DefaultMessageRateReply 421 4.7.0 (Postfix's anvil limits answer 421
//     4.7.0 too); DefaultMaxMessagesReply 421 4.7.0;
//     DefaultMaxRecipientsReply 452 4.5.3 "Error: too many recipients"
//     (Postfix smtpd); DefaultGreylistReply 451 4.7.1 "Greylisting in
//     action, please come back later" (milter-greylist).
//   - No latency, no faults, no STARTTLS, no AUTH, no size limit, no idle
//     timeout (go-smtp answers 421 4.4.2 when one is set); SMTPUTF8 is
//     offered (go-smtp's EnableSMTPUTF8), and so is PIPELINING (go-smtp
//     always offers it; Config.NoPipelining hides it).
//   - A client without an identity is DefaultIdentity (127.0.0.1) on pipes.
//
// # The record
//
// Everything the server sees is recorded, and the accessors (Connections,
// Messages, Replies, Stats, Clients, MaxConcurrency, MaxConcurrencySince,
// MaxConcurrencyAfter, MeanConcurrency, Throttled, CountCause, CountCode,
// FirstReply, Received, MessageCount) are
// safe to call while clients are connected; they return copies. Replies are
// recorded as they are written to the wire, each with its time and the
// Cause that produced it (Cause.Throttling tells throttling replies apart).
// After STARTTLS the wire is encrypted: the record then holds the replies
// the receiver decided (to MAIL, RCPT and the final dot, and refusals), not
// EHLO's or QUIT's.
//
// The record follows the wire, so a client that has just read a reply may
// run ahead of it: call WaitIdle once the client has quit, or synctest.Wait
// in a bubble, before asserting on it.
//
// # Goroutines and pipes
//
// A Server is safe for concurrent use. Close closes the listener and every
// connection (hung ones included) and returns once every goroutine the
// Server started has ended, so goleak-style checks pass after it.
//
// A net.Pipe has no buffer, unlike TCP: a reply the server sends
// unsolicited (go-smtp's idle timeout) is delivered only when the client
// reads, and a client that writes a command instead blocks until its own
// deadline.
package delivertest
