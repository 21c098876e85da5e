package smtpcode

import "strings"

// String returns a short form for logs:
// "transient rate_limit scope=connection rule=gmail-4.7.28 retry_after=30s",
// or "success rule=rfc5321-success" for a positive reply.
func (c Classification) String() string {
	var b strings.Builder
	if c.Rule == RuleSuccess || c.Rule == RuleNoError {
		return "success rule=" + c.Rule
	}
	if c.Transient {
		b.WriteString("transient ")
	} else {
		b.WriteString("permanent ")
	}
	b.WriteString(c.Category.String())
	b.WriteString(" scope=")
	b.WriteString(c.Scope.String())
	b.WriteString(" rule=")
	b.WriteString(c.Rule)
	if c.RetryAfter > 0 {
		b.WriteString(" retry_after=")
		b.WriteString(c.RetryAfter.String())
	}
	return b.String()
}
