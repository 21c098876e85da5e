package smtpcode

import "time"

func ec(class, subject, detail int) EnhancedCode { return EnhancedCode{class, subject, detail} }

// Delays that providers or common software document.
const (
	// gmailCongestionRetry: Gmail's 421 4.4.5 (too many concurrent
	// connections from one IP) usually clears within about 30 s
	// (operational experience recorded in the project's design notes).
	gmailCongestionRetry = 30 * time.Second
	// greylistRetry: postgrey's default --delay is 300 s; milter-greylist
	// and sqlgrey use minutes too. A retry sooner only earns another 4xx.
	greylistRetry = 5 * time.Minute
)

// defaultRules are the built-in rules, tried in order after the user's.
// Provider rules come first (they know where a code lies); they are indexed
// by a basic code, an enhanced code or a class, so a reply only meets the
// few that can apply to it. Then come texts that Postfix, Exim, Sendmail
// and other MTAs write whatever the code; those are tried on every failure
// reply that no earlier rule claimed, their texts found in one pass (see
// needleIndex).
var defaultRules = []Rule{
	// RFC 5321 4.5.3.1.10: "552 Too many recipients" must be treated as
	// temporary (old servers used 552 where 452 is meant).
	{Name: RuleTooManyRecipients, Code: 552, Contains: []string{"too many recipients"},
		Category: RateLimit, Scope: ScopeMessage, Transient: AlwaysTransient},

	// Gmail / Google Workspace: https://support.google.com/a/answer/3726730
	{Name: "gmail-4.4.5", Code: 421, Enhanced: ec(4, 4, 5), ContainsAny: []string{"gsmtp", "google", "gmail", "server busy"},
		Category: Congestion, Scope: ScopeConnection, RetryAfter: gmailCongestionRetry},
	{Name: "gmail-4.7.28", Enhanced: ec(4, 7, 28), Category: RateLimit, Scope: ScopeConnection},
	{Name: "gmail-5.7.28", Enhanced: ec(5, 7, 28), Category: Reputation, Scope: ScopeConnection},
	{Name: "gmail-x.2.1-receiving-rate", Enhanced: ec(0, 2, 1),
		ContainsAny: []string{"receiving mail too quickly", "receiving mail at a rate", "receiving mail too fast"},
		Category:    RateLimit, Scope: ScopeRecipient},
	{Name: "gmail-5.7.1-email-quota", Enhanced: ec(5, 7, 1), Contains: []string{"email quota exceeded"}, Category: RateLimit},
	{Name: "gmail-x.7.23-ptr", Enhanced: ec(0, 7, 23), ContainsAny: []string{"ptr record", "reverse dns"},
		Category: Policy, Scope: ScopeConnection},
	{Name: "gmail-x.7.27-spf", Enhanced: ec(0, 7, 27), Contains: []string{"spf"}, Category: Authentication},
	{Name: "gmail-x.7.29-tls", Enhanced: ec(0, 7, 29), Contains: []string{"tls"}, Category: TLS, Scope: ScopeConnection},
	{Name: "gmail-x.7.30-dkim", Enhanced: ec(0, 7, 30), Contains: []string{"dkim"}, Category: Authentication},
	{Name: "gmail-x.7.32-alignment", Enhanced: ec(0, 7, 32), Category: Authentication},
	{Name: "gmail-x.7.26", Enhanced: ec(0, 7, 26), Category: Authentication},
	{Name: "gmail-4.7.0-connection-expired", Enhanced: ec(4, 7, 0), Contains: []string{"connection expired"},
		Category: Other, Scope: ScopeConnection},
	{Name: "gmail-4.7.0-login-attempts", Enhanced: ec(4, 7, 0), ContainsAny: []string{"too many login attempts"},
		Category: Credentials},
	{Name: "gmail-4.7.0-tls", Enhanced: ec(4, 7, 0), ContainsAny: []string{"tls required", "starttls", "tls not available", "must use tls", "tls connection"},
		Category: TLS, Scope: ScopeConnection},
	{Name: "gmail-4.7.0-reputation", Enhanced: ec(4, 7, 0), ContainsAny: []string{"unusual rate of unsolicited mail", "very low reputation"},
		Category: Reputation, Scope: ScopeConnection},
	{Name: "gmail-4.7.0-not-in-whitelist", Enhanced: ec(4, 7, 0), Contains: []string{"not in whitelist"},
		Category: Policy, Scope: ScopeConnection},
	{Name: "gmail-4.7.0-rate", Enhanced: ec(4, 7, 0),
		ContainsAny: []string{"unusual rate", "rate limit", "rate-limit", "rate of", "try again later, closing connection"},
		Category:    RateLimit, Scope: ScopeConnection},
	{Name: "x.4.5-rate-limit-text", Enhanced: ec(0, 4, 5), ContainsAny: []string{"relay limit", "sending limit", "sending quota", "quota exceeded", "limit exceeded", "per second", "per minute", "per hour"},
		Category: RateLimit, Scope: ScopeSession},

	// Yahoo / AOL: https://senders.yahooinc.com/smtp-error-codes
	{Name: "yahoo-tss04", Class: 4, Contains: []string{"[tss04]"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-ts01", Class: 4, Contains: []string{"[ts01]"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-ts02", Class: 4, Contains: []string{"[ts02]"}, Category: Reputation, Scope: ScopeConnection},
	// TS03 says "permanently deferred; retrying will not succeed" on a 421.
	// The basic code still decides (transient): a sender backs off for long.
	{Name: "yahoo-ts03", Class: 4, Contains: []string{"[ts03]"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-tss", Class: 4, ContainsAny: []string{"[tss0", "[tss1", "[ts0"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-tss09", Class: 5, ContainsAny: []string{"[tss09]", "[ts03]"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-bl", Class: 5, ContainsAny: []string{"[bl21]", "[bl22]", "[bl23]"}, Category: Reputation, Scope: ScopeConnection},
	{Name: "yahoo-ph01", ContainsAny: []string{"[ph01]"}, Class: 5, Category: Policy},
	{Name: "yahoo-5.7.9-policy", Enhanced: ec(5, 7, 9), Contains: []string{"policy reasons"}, Category: Policy},

	// Microsoft (Outlook.com, Exchange Online):
	// https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online
	// https://sendersupport.olc.protection.outlook.com/pm/troubleshooting.aspx
	{Name: "microsoft-4.7.650", Enhanced: ec(4, 7, 650), EnhancedTo: ec(4, 7, 652), Category: Reputation, Scope: ScopeConnection},
	{Name: "microsoft-4.7.5xx-throttle", Enhanced: ec(4, 7, 500), EnhancedTo: ec(4, 7, 699), Category: RateLimit, Scope: ScopeConnection},
	{Name: "microsoft-5.7.606-banned-ip", Enhanced: ec(5, 7, 606), EnhancedTo: ec(5, 7, 649), Category: Reputation, Scope: ScopeConnection},
	{Name: "microsoft-5.7.511-banned-sender", Enhanced: ec(5, 7, 511), Category: Reputation, Scope: ScopeSession},
	{Name: "microsoft-5.7.512-rfc5322", Enhanced: ec(5, 7, 512), Category: Syntax},
	{Name: "microsoft-5.7.7xx-tenant", Enhanced: ec(5, 7, 700), EnhancedTo: ec(5, 7, 750), Category: Reputation, Scope: ScopeConnection},
	// Directory-Based Edge Blocking: the recipient is not in the directory.
	{Name: "microsoft-5.4.1-dbeb", Enhanced: ec(5, 4, 1), Contains: []string{"recipient address rejected", "access denied"}, Category: UnknownUser},
	{Name: "microsoft-4.7.85x-suspicious-ip", Enhanced: ec(4, 7, 850), EnhancedTo: ec(4, 7, 899), Category: Reputation, Scope: ScopeConnection},
	{Name: "microsoft-5.7.50x-spam-abuse", Enhanced: ec(5, 7, 501), EnhancedTo: ec(5, 7, 503), Category: Reputation, Scope: ScopeSession},
	{Name: "microsoft-5.1.8-bad-outbound-sender", Enhanced: ec(5, 1, 8), Contains: []string{"bad outbound sender"}, Category: Reputation, Scope: ScopeSession},
	// DANE and DNSSEC failures towards the destination (x.7.321-x.7.325).
	{Name: "microsoft-x.7.32x-dane", Enhanced: ec(0, 7, 321), EnhancedTo: ec(0, 7, 325), Category: TLS, Scope: ScopeConnection},
	{Name: "microsoft-x.4.316-refused", Enhanced: ec(0, 4, 316), Category: Network, Scope: ScopeConnection},
	{Name: "microsoft-5.1.10", Enhanced: ec(5, 1, 10), ContainsAny: []string{"recipientnotfound", "recipient not found"}, Category: UnknownUser},
	{Name: "microsoft-x.4.31x-dns", Enhanced: ec(0, 4, 310), EnhancedTo: ec(0, 4, 312), Category: UnknownDomain},
	{Name: "microsoft-5.7.1-block-list", Enhanced: ec(5, 7, 1), ContainsAny: []string{"block list", "(s3150)", "(s3140)"},
		Category: Reputation, Scope: ScopeConnection},
	// Exchange Online anti-spam rule ids, "AS(1450)", on a block.
	{Name: "microsoft-as-blocked", Class: 5, Contains: []string{"as("}, ContainsAny: []string{"blocked", "banned", "access denied, traffic"},
		Category: Reputation, Scope: ScopeConnection},
	// Outlook.com RP-001..RP-003: "We have limits for how many messages can
	// be sent per hour and per day."
	{Name: "microsoft-outlook-rp", Class: 4, ContainsAny: []string{"rp-001", "rp-002", "rp-003"}, Category: RateLimit, Scope: ScopeConnection},
	{Name: "microsoft-outlook-sc", Class: 5, ContainsAny: []string{"sc-001", "sc-002", "sc-003", "sc-004", "cs-01", "ou-001", "ou-002"},
		Category: Reputation, Scope: ScopeConnection},
	{Name: "microsoft-outlook-dy", Class: 5, ContainsAny: []string{"dy-001", "dy-002"}, Category: Policy, Scope: ScopeConnection},

	// Apple iCloud Mail: https://support.apple.com/en-us/102322 (HT204137)
	{Name: "apple-hme1", Class: 5, Contains: []string{"[hme1]"}, Category: Authentication},
	{Name: "apple-local-policy", Class: 5, ContainsAny: []string{"[cs01]", "[cs02]", "[hm07]", "[hm08]"}, Category: Policy},
	{Name: "apple-excessive-volume", Class: 4, Contains: []string{"deferred due to excessive volume"}, Category: RateLimit, Scope: ScopeRecipient},
	{Name: "apple-not-accepting", Code: 554, Contains: []string{"not accepting connections"}, Category: Reputation, Scope: ScopeConnection},

	// Comcast / Xfinity: https://postmaster.comcast.net/smtp-error-codes.php
	{Name: "comcast-too-many-sessions", Code: 421, Contains: []string{"too many sessions"}, Category: Congestion, Scope: ScopeConnection},
	{Name: "comcast-rdns", Code: 421, Contains: []string{"reverse dns failure"}, Category: Policy, Scope: ScopeConnection},
	{Name: "comcast-rl", ContainsAny: []string{"rl000001", "rl000010", "rl000011", "rl000100", "rl000101", "rl000110", "rl000111", "rl001"},
		Class: 4, Category: RateLimit, Scope: ScopeConnection},
	{Name: "comcast-rl-5xx", ContainsAny: []string{"rl000001", "rl000010", "rl000011", "rl000100", "rl000101", "rl000110", "rl000111", "rl001"},
		Class: 5, Category: RateLimit, Scope: ScopeConnection},
	{Name: "comcast-bl", Class: 5, ContainsAny: []string{"bl000000", "bl000001", "bl000010", "bl000011", "bl000100", "bl000101", "bl000110", "bl000111", "comcast block for spam"},
		Category: Reputation, Scope: ScopeConnection},
	{Name: "comcast-es", Class: 5, ContainsAny: []string{"es000001", "es000010"}, Category: Policy, Scope: ScopeConnection},

	// Cox: https://www.cox.com/residential/support/email-error-codes.html
	// (AUP# codes; meanings as listed there and in sisimai's Rhost/Cox.pm).
	{Name: "cox-aup-cxcnct", ContainsAny: []string{"aup#cxcnct", "too many sessions from"}, Class: 4,
		Category: Congestion, Scope: ScopeConnection}, // over 10 concurrent connections per IP
	{Name: "cox-aup-cxmxrt", ContainsAny: []string{"aup#cxmxrt", "message threshold exceeded"}, Category: RateLimit, Scope: ScopeConnection},
	{Name: "cox-aup-blocklist", ContainsAny: []string{"aup#cdrbl", "aup#cxbl", "aup#ipbl", "aup#rbl", "aup#bl"},
		Category: Reputation, Scope: ScopeConnection},
	{Name: "cox-aup-account", ContainsAny: []string{"aup#cxthrt", "aup#cxmj"}, Category: Reputation, Scope: ScopeSession},
	{Name: "cox-aup-cxdns", ContainsAny: []string{"aup#cxdns"}, Category: Policy, Scope: ScopeConnection},
	{Name: "cox-aup-cxsndr", ContainsAny: []string{"aup#cxsndr"}, Category: Authentication},
	{Name: "cox-aup-cxsmtp", ContainsAny: []string{"aup#cxsmtp"}, Category: Policy, Scope: ScopeConnection},
	{Name: "cox-aup-urlbl", ContainsAny: []string{"aup#urlbl"}, Category: Spam},
	// GoDaddy: IB607 too many recipients per hour, IB508 SPF.
	{Name: "godaddy-ib607", Class: 5, ContainsAny: []string{"ib607", "too many recipients this hour"}, Category: RateLimit},
	// Orange / La Poste "service refused" (LPN001, LPN006).
	{Name: "orange-service-refused-5xx", Class: 5, Contains: []string{"service refused"}, Category: Policy, Scope: ScopeConnection},
	{Name: "orange-service-refused-4xx", Class: 4, Contains: []string{"service refused"}, Category: Other, Scope: ScopeConnection},

	// Generic texts, by the family a sender must get right first.
	// Greylisting (postgrey, milter-greylist, sqlgrey, Exim, Mimecast).
	{Name: "text-greylist", Class: 4,
		ContainsAny: []string{"greylist", "graylist", "grey-list", "gray-list", "greylisting", "postgrey", "please come back in",
			"internal resource temporarily unavailable", "internal resources are temporarily unavailable"},
		Category: Greylist, Scope: ScopeRecipient, RetryAfter: greylistRetry},
	// Gmail files RFC 5322 violations (several Subject or From headers)
	// under its sender policy.
	{Name: "gmail-rfc5322-policy", Class: 5, Contains: []string{"not rfc 5322 compliant"}, Category: Policy, Scope: ScopeMessage},
	{Name: "text-syntax", ContainsAny: []string{"duplicate header", "protocol violation", "syntax error"},
		Category: Syntax, Scope: ScopeMessage},
	{Name: "text-credentials", ContainsAny: []string{"authentication required", "password not accepted", "username and password",
		"unauthenticated senders not allowed", "authentication failed", "invalid login", "too many login attempts", "must authenticate",
		"unrecognized authentication type", "application-specific password", "client was not authenticated", "cannot authenticate",
		"authentication unsuccessful", "authentication credentials invalid"},
		Category: Credentials, Scope: ScopeSession},
	{Name: "text-system-storage", ContainsAny: []string{"insufficient disk space", "insufficient system storage", "unable to contact destination",
		"temporary system problem", "insufficient system resources"},
		Class: 4, Category: System, Scope: ScopeConnection},
	{Name: "text-system-loop", ContainsAny: []string{"mail loop", "routing loop", "hop count exceeded", "too many hops"},
		Category: System, Scope: ScopeMessage},
	{Name: "text-authentication", ContainsAny: []string{"dmarc", "spf", "dkim", "unauthenticated", "authentication checks",
		"authentication information", "purported responsible address", "sender id", "authentication level"},
		Category: Authentication, Scope: ScopeMessage},
	{Name: "text-tls", ContainsAny: []string{"starttls", "tls not available", "tls required", "must use tls", "encryption required",
		"requires encryption", "requires tls"},
		Category: TLS, Scope: ScopeConnection},
	{Name: "text-too-many-recipients", Contains: []string{"too many recipients"}, Category: RateLimit, Scope: ScopeMessage},
	// Limits on connections from the sending IP (Postfix uses "too many
	// connections from" for both its count and its rate limit).
	{Name: "text-connection-limit", ContainsAny: []string{"too many connections", "connection rate", "connections per",
		"max message per connection", "too many messages in this connection"},
		Category: RateLimit, Scope: ScopeConnection},
	{Name: "text-rate-limit", ContainsAny: []string{"rate limit", "rate-limit", "ratelimit", "rate limited", "too many messages",
		"too much mail", "too many recipients", "frequency limited", "receiving mail too quickly", "receiving mail at a rate",
		"messages per", "relay limit exceeded", "sending limit", "quota exceeded for sending", "exceeded its quota for sending",
		"submissionquotaexceeded", "thread limit exceeded", "outbound thread limit", "maximum sending rate exceeded",
		"daily message quota exceeded", "emails per hour", "max defers and failures per hour", "sending rate", "sending quota", "excessive volume", "we have limits for how many messages"},
		Category: RateLimit, Scope: ScopeSession},
	{Name: "text-reputation", ContainsAny: []string{"open relay", "unusual rate of unsolicited", "blocked using", "block list", "blocklist", "blacklist", "blocklisted",
		"spamhaus", "dnsbl", "spamcop", "sorbs", "barracudacentral", "reputation", "blocked for spam", "client host blocked",
		"blocked for abuse", "banned sending ip", "(bl)", "unexpected volume or user complaints", "user complaints"},
		Category: Reputation, Scope: ScopeConnection},
	{Name: "text-relay-denied", ContainsAny: []string{"relay access denied", "relaying denied", "relay denied", "relay not permitted",
		"unable to relay", "relaying not allowed", "not configured to relay", "relay not allowed", "we do not relay",
		"email address is not verified", "invalid credentials for relay"},
		Category: RelayDenied, Scope: ScopeRecipient},
	{Name: "text-unknown-user", ContainsAny: []string{"user unknown", "unknown user", "unknown recipient", "no such user", "invalid recipient",
		"recipient not found", "mailbox not found", "mailbox does not exist", "address does not exist",
		"user not found", "no mailbox", "mailbox is disabled", "mailbox is frozen", "account is disabled", "account is blocked",
		"account has been disabled", "this user doesn't have a", "does not have an account", "temporary locked", "inactive email address",
		"not our user", "no longer on server", "unknown or illegal alias", "user does not exist"},
		Category: UnknownUser, Scope: ScopeRecipient},
	{Name: "text-unknown-domain", ContainsAny: []string{"host unknown", "no such domain", "domain not found", "unroutable", "unrouteable", "unresolvable",
		"domain is not reachable", "does not accept mail", "dns query failed", "invalid domain", "domain does not exist"},
		Category: UnknownDomain, Scope: ScopeRecipient},
	{Name: "text-mailbox-full", ContainsAny: []string{"mailbox full", "mailbox is full", "over quota", "quota exceeded", "out of storage space",
		"insufficient storage", "exceeded storage allocation"},
		Category: MailboxFull, Scope: ScopeRecipient},
	{Name: "text-message-size", ContainsAny: []string{"too large", "too big", "size exceeds", "exceeds size limit", "message size", "length exceeds"},
		Category: MessageSize, Scope: ScopeMessage},
	{Name: "text-spam", ContainsAny: []string{"spam", "virus", "malware", "ube,", "unsolicited", "content rejected", "junk mail"},
		Category: Spam, Scope: ScopeMessage},
	{Name: "text-policy", ContainsAny: []string{"reverse dns", "rdns", "ptr record", "ptr resource record", "policy reasons",
		"host network not allowed", "recipient preferences", "local policy", "not authorized to send email directly", "sender verify failed", "administrative prohibition"},
		Category: Policy, Scope: ScopeSession},
	{Name: "text-recipient-error", Class: 4, Contains: []string{"due to a recipient error"}, Category: Other, Scope: ScopeRecipient},
	{Name: "text-congestion", Class: 4, ContainsAny: []string{"busy", "too many sessions", "too many smtp sessions", "too many concurrent", "system overloaded",
		"server overloaded", "overloaded", "unable to process connection at this time", "account service is temporarily unavailable"},
		Category: Congestion, Scope: ScopeConnection},
	{Name: "text-system-554", Code: 554, Contains: []string{"service currently unavailable"}, Category: System, Scope: ScopeConnection},
}
