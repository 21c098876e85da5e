package deliver

import "github.com/sluicemail/sluice/governor"

// Site keys of the large receivers, as SiteOf computes them from their MX hosts.
const (
	SiteGoogle    = "google.com"   // gmail.com and every Google Workspace domain (aspmx.l.google.com)
	SiteYahoo     = "yahoodns.net" // yahoo.com, aol.com and others (mta5.am0.yahoodns.net)
	SiteMicrosoft = "outlook.com"  // outlook.com, hotmail.com and Microsoft 365 (*.mail.protection.outlook.com)
)

// DefaultPolicy returns the built-in governor policy. deliver's keys are
// "ip:<source>", "site:<site>" and "ip:<source>|site:<site>" (source
// "any" when the system picks it), plus each Message's Keys. A connection
// holds one slot on the three connection keys for its whole life; each
// transaction takes one message token on them; each message takes one token
// on its own Keys.
//
// The limits are per source IP and site:
//   - google.com: 2 concurrent connections. Operators report 1-2 per IP as
//     safe, 3-5 as throttled now and then (421 4.4.5), above 5 always.
//   - yahoodns.net: 4 concurrent connections (Postfix tuning guides use 4-5
//     against [TSS04] deferrals).
//   - outlook.com: 5 concurrent connections.
//   - any other site: 5 (Postfix's initial_destination_concurrency), a
//     conservative ceiling: Postfix allows 20 once a destination proves itself.
//
// Every ceiling adapts down on congestion replies and back up on success
// (governor.Adaptive defaults). Copy and change it, or give your own
// Config.Policy or Config.Governor.
func DefaultPolicy() *governor.Policy {
	return &governor.Policy{
		Patterns: []governor.Pattern{
			{Match: "ip:*|site:" + SiteGoogle, Limits: governor.Limits{MaxConcurrency: 2}},
			{Match: "ip:*|site:" + SiteYahoo, Limits: governor.Limits{MaxConcurrency: 4}},
			{Match: "ip:*|site:" + SiteMicrosoft, Limits: governor.Limits{MaxConcurrency: 5}},
			{Match: "ip:*|site:*", Limits: governor.Limits{MaxConcurrency: governor.PostfixInitialConcurrency}},
		},
	}
}
