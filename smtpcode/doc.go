// Package smtpcode parses SMTP replies and says what they mean for
// delivery: try again later or give up, what kind of trouble, and what it
// concerns.
//
// # Model
//
// A Reply is the basic code of the final line (RFC 5321), the RFC 3463
// enhanced code (class.subject.detail) and the human text. Parse reads one
// from the wire or from a bounce, in all the layouts servers and bounces
// use; FromError takes it from a go-smtp *smtp.SMTPError or a net/smtp
// *textproto.Error, recovering the enhanced code that go-smtp's client
// drops when a server writes it on the last line only.
//
// A Classification says whether the failure is Transient, its Category
// (congestion, rate_limit, greylist, ... see Category), its Scope (the
// connection or sending IP, the session or sender, one recipient, the
// message), the Rule that decided, for logs, and RetryAfter, a delay the
// server asked for ("try again in 92 seconds") or the deciding rule
// documents (Gmail's 421 4.4.5: about 30 s; greylisting: 5 min).
//
// # Precedence
//
// Classify tries, in order, and stops at the first that decides:
//
//  1. the user's rules (NewClassifier(rules...)), in the order given;
//  2. the built-in provider rules (Gmail, Yahoo, Microsoft, Apple,
//     Comcast, Cox, ...), which know where a provider's codes lie: Gmail's
//     "550 5.2.1 ... receiving mail at a rate" is a rate limit, not a
//     disabled mailbox; Microsoft's 5.1.10 is an unknown user, not a null
//     MX; "452 4.4.5 Messages per second limit exceeded" is a rate limit;
//  3. the built-in text rules, for texts that MTAs (Postfix, Exim,
//     Sendmail, greylisting daemons) write whatever the code;
//  4. the enhanced code (RFC 3463, RFC 5248 and the IANA registry; Rule
//     "rfc3463-x.4.5" and the like); X.0.0 says nothing and falls through;
//  5. the basic code (RFC 5321, RFC 4954, RFC 7504; Rule "rfc5321-421").
//
// Rules with a code condition are indexed by the basic code, the enhanced
// code or the class they need, so a reply meets only those that can apply
// to it, however many there are; rules with text conditions only (the MTA
// texts) are tried on every failure reply that nothing earlier claimed.
// Text patterns are plain case-insensitive substrings (no regular
// expressions), looked for in a text lower-cased once: those of rules with
// a code condition, the first few directly; then, and as soon as a rule
// with text conditions only is reached, all of the classifier's patterns
// in one pass over the text (each anchored on four rare bytes), after which
// a rule none of whose patterns occurs is passed over with a bit test.
// DefaultRules lists the built-in rules.
//
// # Transient or permanent, and when the codes disagree
//
// Transient follows the basic code, as RFC 5321 makes it binding: 4xx is
// transient, 5xx permanent. When a reply has no basic code, the enhanced
// class decides. When the basic code and the enhanced class disagree
// ("451 5.7.3", "554 4.4.7"), the basic code decides Transient (451 5.7.3
// is transient, 554 4.4.7 is permanent) and the enhanced code's subject and
// detail still decide the Category. Rules may override Transient where a
// standard or a provider documents it: "552 Too many recipients" is
// transient (RFC 5321 4.5.3.1.10). Yahoo's "421 4.7.0 [TS03] ... will be
// permanently deferred" stays transient: a 421 is retried, and the
// reputation category tells a sender to back off for long.
//
// A reply with no code at all, or an error that is not a reply, is never
// permanent: a classifier that bounced mail on garbage would lose mail.
//
// # Errors
//
// ClassifyError classifies any error a delivery attempt returns: replies
// via FromError; refused, reset or timed-out connections, EOF, DNS and TLS
// handshake failures as transient Network (Rule RuleTLS for the latter);
// anything unknown as transient Other. context.Canceled gives Rule
// RuleContextCanceled (transient, Category Other) and
// context.DeadlineExceeded Rule RuleContextDeadline (transient, Network);
// the error itself stays recognisable with errors.Is, and neither is ever
// classified as a permanent failure.
//
// # Adding rules
//
// Users put their own rules first:
//
//	c := smtpcode.NewClassifier(smtpcode.Rule{
//		Name:     "acme-throttle",
//		Code:     451,
//		Contains: []string{"acme rate control"},
//		Category: smtpcode.RateLimit,
//		Scope:    smtpcode.ScopeConnection,
//	})
//	cl := c.Classify(reply)
//
// A Rule matches when every condition that is set holds: Code, Class,
// Enhanced (or the range Enhanced..EnhancedTo; class 0 in Enhanced means
// either class), every string in Contains and one of ContainsAny. A rule
// without a code condition is tried on every failure reply.
//
// # Goroutines
//
// Parse, FromError, Classify and ClassifyError are pure functions. A
// Classifier is immutable once NewClassifier returns it and safe for
// concurrent use by any number of goroutines.
//
// # Defaults and their sources
//
//   - Enhanced code names: the IANA SMTP Enhanced Status Codes registry
//     (RFC 3463, RFC 5248, later RFCs), in full, as Go data.
//   - Gmail rules: https://support.google.com/a/answer/3726730; Gmail's
//     421 4.4.5 RetryAfter of 30 s is operational experience (a retry after
//     about 30 s usually succeeds).
//   - Yahoo rules: https://senders.yahooinc.com/smtp-error-codes.
//   - Microsoft rules: Exchange Online NDR documentation and
//     https://sendersupport.olc.protection.outlook.com/pm/troubleshooting.aspx.
//   - Apple: https://support.apple.com/en-us/102322; Comcast:
//     https://postmaster.comcast.net/smtp-error-codes.php; Cox:
//     https://www.cox.com/residential/support/email-error-codes.html;
//     Mimecast: https://community.mimecast.com/s/article/Mimecast-SMTP-Error-Codes-842605754.
//   - MTA texts: Postfix (smtpd, postscreen), Exim, Sendmail, postgrey,
//     milter-greylist. testdata/replies_extra.tsv gives a source per row.
//   - Greylisting RetryAfter of 5 min: postgrey's default delay (300 s).
//   - Server hints are capped at 24 h.
package smtpcode
