// Package backoff decides when to try a deferred message again.
//
// # The model
//
// A delivery attempt that fails with a transient reply is retried later;
// how much later depends on what the reply meant. smtpcode classifies the
// reply; a Policy turns the classification, the attempt number, the time of
// the first attempt and now into a Decision (when to try next) or a
// *GiveUpError (do not retry: the failure is permanent, or the message has
// reached its maximum age). Policy.NextAttempt is a pure function of its
// arguments and its random source, so a schedule can be table-tested.
//
// Each category has its own exponential schedule (Schedule), computed once,
// when the Policy is built, by cenkalti/backoff's ExponentialBackOff on a
// fixed Clock with its randomization off: after failed
// attempt n the interval is InitialInterval·Multiplier^(n-1), capped at
// MaxInterval. Every delay is then jittered by ±RandomizationFactor, with
// ExponentialBackOff's formula but the caller's random source, so that a
// fleet of messages deferred in the same second does not come back in
// lockstep. A server's hint (Classification.RetryAfter: "try again in 92
// seconds", or a provider rule's known delay) is a lower bound: the delay is
// never shorter, and is jittered upwards only. When the next attempt would
// fall after the maximum age it is brought forward to it, for one last try.
//
// # Attempts and limiter waits
//
// Only a real delivery attempt (an SMTP transaction that got a reply, or a
// network failure) is an attempt. Waiting for a governor limit (a
// concurrency slot, a rate token, a daily quota) is never one, and the API
// keeps the two apart: Policy.NextAttempt takes the caller's attempt number,
// while Policy.Postpone, for limiter waits, takes none and cannot advance
// one. An operation run by Retry or by the BackOff adapter reports a limiter
// wait by returning NotAttempted(wait, reason); it is waited for and not
// counted. The maximum age still applies to limiter waits, as Postfix's queue
// lifetime applies whatever kept a message queued.
//
// # Retrying
//
// Retry (and RetryNotify) runs an operation that sends with the caller's own
// net/smtp or go-smtp client until it succeeds, classifying each error with
// smtpcode.ClassifyError, stopping on permanent ones and waiting on a timer
// bound to its context (fake time under testing/synctest). It returns the
// last error, wrapped in a *GiveUpError when the policy gave up, so that
// errors.As still finds the *smtp.SMTPError. Policy.BackOff adapts a policy
// to cenkalti/backoff's BackOff for users of its RetryNotify.
//
// Errors: ErrPermanent and ErrMaxAge (errors.Is) say why a *GiveUpError
// (errors.As) gave up; ErrInvalid marks bad arguments or settings and never
// means "give up".
//
// # Goroutine safety
//
// A Policy is immutable and safe for concurrent use (it serialises calls to
// Settings.Rand). A BackOff adapter, like cenkalti's own BackOffs, is not:
// use one per retry loop. The Rand passed to NextAttempt is used as is.
//
// # Defaults and their sources
//
// Settings' zero value gives these; each zero field of a Schedule takes its
// category's value.
//
//   - Maximum age 5 days: Postfix's maximal_queue_lifetime (5d). KumoMTA's
//     max_age is 7 days; RFC 5321 section 4.5.4.1 says the give-up time
//     "generally needs to be at least 4-5 days".
//   - system, network, other and every category without a schedule of its
//     own: 5 min, doubling, capped at 4000 s (~67 min): Postfix's
//     minimal_backoff_time (300s since Postfix 2.4) and maximal_backoff_time
//     (4000s), with qmgr(8)'s "exponential backoff by doubling the time
//     between delivery attempts". KumoMTA also doubles (retry_interval 20m).
//   - congestion (421 4.4.5, "too many concurrent connections"): 30 s,
//     doubling, capped at 5 min. Gmail's 421 4.4.5 means "try again later";
//     in practice a retry after about 30 s usually succeeds, and repeated
//     4.4.5 slowly harms the sending IP's reputation, so growth is fast.
//   - rate_limit (Gmail 4.7.28, Yahoo [TSS04], Microsoft 4.7.650): 5 min,
//     doubling, capped at 1 h: these limits are counted over minutes to an
//     hour, and retrying sooner only extends them.
//   - greylist: 10 min ±50%, so the first retry comes 5-15 min later, after
//     the greylisting delay (postgrey's --delay defaults to 300 s); then
//     doubling, capped at 1 h.
//   - mailbox_full: 1 h, doubling, capped at 6 h: the recipient must act,
//     which takes hours, not minutes.
//   - Jitter (RandomizationFactor) 0.25 on every schedule but greylist's
//     0.5: a delay d is drawn from [0.75·d, 1.25·d]. cenkalti/backoff's own
//     default is 0.5.
//   - Hints are capped at 24 h (Sluice's choice), so that a garbled or
//     hostile "try again in 9999 hours" neither parks nor expires mail.
//
// RFC 5321 section 4.5.4.1 asks for a retry interval of at least 30 minutes
// but adds that "more sophisticated and variable strategies will be
// beneficial when the SMTP client can determine the reason for
// non-delivery": the per-category schedules are that strategy.
package backoff
