package delivertest

import "time"

// Replies of the providers, as they send them. Sources: the labelled real
// replies in the project's shared testdata (replies.tsv: sisimai's corpus of
// bounces), marked so below; Google's SMTP error reference
// (support.google.com/a/answer/3726730) for 421 4.4.5; replies seen in
// senders' logs for 421 4.7.28 and Exchange's 421 4.3.2. "{client}" stands
// for the sending IP they quote.
var (
	// GmailConcurrencyReply: too many connections from one IP at once.
	GmailConcurrencyReply = Reply{421, "4.4.5", "Server busy, try again later. - gsmtp"}
	// GmailRateReply: the IP sends too fast (multi-line, as Gmail sends it).
	GmailRateReply = Reply{421, "4.7.28", "[{client}] Our system has detected an unusual rate of\n" +
		"unsolicited mail originating from your IP address. To protect our\n" +
		"users from spam, mail sent from your IP address has been temporarily\n" +
		"rate limited. Please visit\n" +
		"https://support.google.com/mail/?p=UnsolicitedRateLimitError to\n" +
		"review our Bulk Email Senders Guidelines. - gsmtp"}
	// GmailTooManyRecipientsReply (replies.tsv).
	GmailTooManyRecipientsReply = Reply{452, "4.5.3", "Your message has too many recipients. For more information regarding Google's sending limits, visit https://support.google.com/mail/answer/6592"}
	// GmailReceivingTooFastReply: one recipient gets mail too fast (replies.tsv).
	GmailReceivingTooFastReply = Reply{450, "4.2.1", "The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time. If the user is able to receive mail at that time, your message will be delivered. For more information, visit https://support.google.com/mail/answer/22839"}
	// GmailUnknownUserReply: the account is disabled (replies.tsv).
	GmailUnknownUserReply = Reply{550, "5.2.1", "The email account that you tried to reach is disabled. - gsmtp"}
	// GmailMailboxFullReply (replies.tsv).
	GmailMailboxFullReply = Reply{452, "4.2.2", "The recipient's inbox is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp"}

	// YahooDeferralReply: Yahoo's TSS04 deferral for volume (replies.tsv).
	YahooDeferralReply = Reply{421, "4.7.0", "[TSS04] Messages from {client} temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.verizonmedia.com/error-codes"}
	// YahooMaxMessagesReply, with no enhanced code as Yahoo sends it (replies.tsv).
	YahooMaxMessagesReply = Reply{421, "", "Max message per connection reached, closing transmission channel"}

	// OutlookRateReply: Microsoft's reputation-based rate limit (replies.tsv).
	// A 451: the connection stays open.
	OutlookRateReply = Reply{451, "4.7.650", "The mail server [{client}] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S3113)"}
	// OutlookConcurrencyReply: Exchange's concurrent connection limit.
	OutlookConcurrencyReply = Reply{421, "4.3.2", "The maximum number of concurrent server connections has exceeded a limit, closing transmission channel"}
	// OutlookUnknownUserReply (replies.tsv).
	OutlookUnknownUserReply = Reply{550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"}
)

// Gmail returns a Gmail-like receiver. Per sending IP:
//
//   - at most 2 connections at once: the third gets GmailConcurrencyReply
//     (421 4.4.5) at the greeting. Operators report 1-2 concurrent
//     connections per IP as safe, 3-5 as tripping now and then and more than
//     5 as always throttled; the preset takes the safe end, so a sender that
//     passes it passes Gmail. Set Limits.MaxConnections to 5 for the
//     lenient end.
//   - a message rate of 10 per second with a burst of 20, answered by
//     GmailRateReply (421 4.7.28, multi-line). Google publishes no per-IP
//     figure: this one is illustrative.
//   - at most 100 recipients per message (GmailTooManyRecipientsReply, 452
//     4.5.3); 100 is the minimum RFC 5321 4.5.3.1.8 requires a server to
//     accept, and Google's receiving limit is not published.
//
// It offers STARTTLS. Change any field of the result to override.
func Gmail() Config {
	return Config{
		Domain: "mx.gmail.test",
		Limits: Limits{
			MaxConnections:     2,
			ConnectionsReply:   GmailConcurrencyReply,
			MessageRate:        Rate{Every: 100 * time.Millisecond, Burst: 20, Reply: GmailRateReply},
			MaxRecipients:      100,
			MaxRecipientsReply: GmailTooManyRecipientsReply,
		},
		StartTLS: true,
	}
}

// Yahoo returns a Yahoo-like receiver. Per sending IP:
//
//   - at most 5 connections at once, and a message rate of 5 per second with
//     a burst of 10; both answer YahooDeferralReply (421 4.7.0 [TSS04]), and
//     once the rate trips every connection and message from that IP gets it
//     for 10 seconds. Yahoo publishes no figures: these are illustrative, and
//     its real TSS04 deferrals last minutes to hours (raise Penalty for that).
//   - at most 50 messages per connection (YahooMaxMessagesReply, a 421 with
//     no enhanced code).
//
// It offers STARTTLS.
func Yahoo() Config {
	return Config{
		Domain: "mta.yahoo.test",
		Limits: Limits{
			MaxConnections:           5,
			ConnectionsReply:         YahooDeferralReply,
			MessageRate:              Rate{Every: 200 * time.Millisecond, Burst: 10, Reply: YahooDeferralReply, Penalty: 10 * time.Second},
			MaxMessagesPerConnection: 50,
			MaxMessagesReply:         YahooMaxMessagesReply,
		},
		StartTLS: true,
	}
}

// Outlook returns a Microsoft-like (Outlook.com, Exchange Online) receiver.
// Per sending IP:
//
//   - at most 10 connections at once (OutlookConcurrencyReply, 421 4.3.2);
//   - a message rate of 10 per second with a burst of 20, answered by
//     OutlookRateReply (451 4.7.650) at MAIL FROM, which leaves the
//     connection open.
//
// Microsoft publishes no per-IP figures: these are illustrative. It offers
// STARTTLS.
func Outlook() Config {
	return Config{
		Domain: "mail.protection.outlook.test",
		Limits: Limits{
			MaxConnections:   10,
			ConnectionsReply: OutlookConcurrencyReply,
			MessageRate:      Rate{Every: 100 * time.Millisecond, Burst: 20, Reply: OutlookRateReply},
		},
		StartTLS: true,
	}
}
