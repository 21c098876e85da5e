// Package deliver sends mail over SMTP while keeping every receiver under
// the limits it enforces, and tells you exactly what became of each
// recipient.
//
// # The model
//
// A [Sender] is created once with [New] and shared: it is safe for
// concurrent use by any number of goroutines. [Sender.Send] delivers one
// [Message] and returns one [Result] per recipient, in order: Delivered,
// Deferred (with the reply, its classification and the time to retry) or
// Bounced (with the reply and its classification). Send returns an error
// only when nothing was attempted: invalid input (wrapping
// [ErrInvalidAddress], [ErrNoRecipients], [ErrInvalidMessage] or
// [ErrMessageTooLarge]) or a closed Sender ([ErrClosed]).
// [Sender.Close] lets in-flight Sends finish, sends QUIT on pooled
// connections and releases every governor slot.
//
// Before a byte goes on the wire the message is validated: RFC 5321
// address syntax and lengths (local part 64, domain 255, path 256 octets),
// no CR, LF, NUL or angle brackets smuggled into an address, at least one
// recipient. Every bare CR or LF in the data is sent as CRLF, so that the
// receiver sees the end of data where we do (SMTP smuggling); dot-stuffing
// is done on the wire. Non-ASCII addresses need SMTPUTF8 (RFC 6531): a
// receiver without it gets nothing and the recipient bounces with 553 5.6.7.
//
// Recipients are grouped by domain and routed: through one relay
// (Config.Smarthost, with AUTH via go-sasl, over TLS only unless you allow
// otherwise), a static map (Config.Routes, for tests), or MX lookups
// (cached for Config.MXCacheTTL; the domain itself when it has no MX;
// RFC 7505 null MX bounces with 556 5.1.10; hosts in preference order).
// The MX set rolls up to a site: the registrable domain of the best MX host
// ([SiteOf]), so every Google Workspace domain shares "google.com" with
// gmail.com, and every Microsoft 365 domain shares "outlook.com".
//
// # Limits and feedback
//
// A governor (package governor) holds the limits. A connection holds one
// concurrency slot on three keys for its whole life: "ip:<source>",
// "site:<site>" and "ip:<source>|site:<site>" (source "any" when the
// system picks it). Each transaction takes one message token on them, and
// each message one token on its own Message.Keys (a sending mailbox, a
// tenant): rate, daily quota, send window, jitter. The message's token is
// taken when Send starts, and given back (governor.Reservation) when the
// message is not sent after all, every recipient Deferred and none
// possibly delivered: its retry takes it again, so a quota counts
// messages sent. Transaction tokens on the site's keys are not given back:
// the receiver saw the attempt. [DefaultPolicy] allows 2
// connections per source IP to Google, 4 to Yahoo, 5 to Microsoft and 5 to
// everyone else; replace it with Config.Policy or Config.Governor.
//
// Every reply is classified (package smtpcode) and fed back: a congestion
// refusal (Gmail's 421 4.4.5) shrinks the source x site concurrency, a rate
// limit (421 4.7.28, Yahoo's [TSS04]) lowers its rate, network failures
// count toward a suspension, successes grow it back. deliver also learns
// what only it can measure, per source IP and site, for [DefaultLearnFor]
// (10 minutes) after the last lesson:
//   - how many connections the receiver accepted when it refused one (its
//     greeted sessions): no more are opened, so a receiver capped at N never
//     sees N+1 again after its first refusal (the check comes after the
//     governor's slot is held, so calls already waiting for one obey it too);
//   - the rate it was delivering at when a rate-limit reply came: it halves
//     it, then grows 0.5% per delivery up to 90% of the refused rate;
//   - a receiver's messages-per-connection cap ("421 Max messages per
//     connection" at MAIL): the message goes on a new connection at once,
//     not counted as an attempt, and later connections stop before the cap.
//
// Within Send, a recipient whose connection was
// refused or lost is retried on another connection (an idle one at once, a
// new one after the backoff delay for congestion) while Config.MaxWait and
// ctx allow, at most Config.MaxAttempts times; then it comes back
// Deferred with RetryAt from the backoff policy. Waiting for a governor
// limit is never an attempt. A connection lost after the final dot, before
// the reply, gives Deferred with PossiblyDelivered set: a retry may deliver
// twice.
//
// # Connections
//
// deliver owns each net.Conn (dialled from Message.SourceIP or
// Config.SourceIP, or through Config.Dial). go-smtp's client reads the
// EHLO reply and runs AUTH; the mail transaction itself (MAIL, RCPT, DATA,
// the body, RSET) is written by deliver, because go-smtp's client sends one
// command per round trip. When the receiver offers PIPELINING (RFC 2920),
// MAIL, every RCPT and DATA go out in one write (in groups of at most
// 2 KiB) and their replies are read together: a message costs two round
// trips instead of three plus one per recipient, which doubles what one
// connection carries to a receiver tens of milliseconds away, where the
// number of connections is what a receiver limits.
// Config.DisablePipelining sends one command at a time. deliver sets a
// deadline for every step, including the DATA body and the final dot;
// ctx cancellation closes the connection at once. Connections are pooled
// per source IP and site (a connection put back goes to the Send that has
// waited longest for one), reused for up to Config.MaxMessagesPerConn
// messages, closed after Config.IdleTimeout idle and after any 421. No
// RSET follows a successful DATA; a failed transaction is ended with RSET
// (and, unlike go-smtp's Reset, no repeated EHLO). The TLS
// policy is opportunistic STARTTLS by default (without Config.TLSConfig the
// certificate is not verified, as Postfix's "may"), or required (no MAIL
// is sent without TLS, no plaintext fallback), or none.
//
// # Defaults and their sources
//
//	Timeouts.Connect       30 s     Postfix smtp_connect_timeout
//	Timeouts.Greeting      5 min    RFC 5321 4.5.3.2.1
//	Timeouts.Hello         5 min    (EHLO, STARTTLS, AUTH, RSET, QUIT)
//	Timeouts.Mail          5 min    RFC 5321 4.5.3.2.2
//	Timeouts.Rcpt          5 min    RFC 5321 4.5.3.2.3
//	Timeouts.DataInit      2 min    RFC 5321 4.5.3.2.4
//	Timeouts.DataBlock     3 min    RFC 5321 4.5.3.2.5 (each body write, the final dot)
//	Timeouts.DataEnd       10 min   RFC 5321 4.5.3.2.6
//	MXCacheTTL             5 min    (net.Resolver gives no TTL)
//	MaxMessagesPerConn     100
//	IdleTimeout            5 s      Postfix smtp_connection_cache_time_limit is 2 s
//	MaxConnAge             5 min    Postfix smtp_connection_reuse_time_limit
//	MaxWait                1 min
//	MaxAttempts            3        per domain within one Send
//	MaxMessageBytes        64 MiB
//	TLS                    opportunistic (RFC 3207, RFC 7435)
//	HelloName              os.Hostname()
//
// # Other transports
//
// [Sender.SendNetSMTP] sends one message through an existing net/smtp
// client with the same validation, governor and classification; its
// deadlines are enforced by closing the client, as net/smtp exposes no
// connection. [SendMail] has net/smtp.SendMail's signature.
//
// # Observability
//
// Config.Logger (a *slog.Logger; nil logs nothing) gets a Debug record per
// connection, attempt and governor wait, and an Info record per result.
// Config.Hooks are called on the same events, for metrics, with no metrics
// dependency.
//
// Package deliver/delivertest provides in-process receivers that throttle
// like Gmail, Yahoo and Microsoft; with Config.Dial set to its dialer a
// Sender runs inside testing/synctest, so a policy is tested in fake time.
package deliver
