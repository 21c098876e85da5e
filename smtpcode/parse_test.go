package smtpcode

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseLayouts(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Reply
	}{
		{"one line", "421 4.4.5 Server busy, try again later.",
			Reply{421, EnhancedCode{4, 4, 5}, "Server busy, try again later."}},
		{"no enhanced code", "550 Host unknown", Reply{550, EnhancedCode{}, "Host unknown"}},
		{"code only", "421", Reply{Code: 421}},
		{"code and hyphen only", "250-", Reply{Code: 250}},
		{"enhanced on every line CRLF", "550-5.1.1 The email account that you tried to reach does\r\n550-5.1.1 not exist.\r\n550 5.1.1 Please check. - gsmtp\r\n",
			Reply{550, EnhancedCode{5, 1, 1}, "The email account that you tried to reach does\nnot exist.\nPlease check. - gsmtp"}},
		{"enhanced on every line LF", "452-4.2.2 Full\n452 4.2.2 mailbox",
			Reply{452, EnhancedCode{4, 2, 2}, "Full\nmailbox"}},
		{"enhanced on first line only", "550-5.7.1 Blocked by policy\n550-see the site\n550 for details",
			Reply{550, EnhancedCode{5, 7, 1}, "Blocked by policy\nsee the site\nfor details"}},
		{"enhanced on last line only (go-smtp server)", "421-Too many connections\n421-from your IP\n421 4.4.5 Try later",
			Reply{421, EnhancedCode{4, 4, 5}, "Too many connections\nfrom your IP\nTry later"}},
		{"lower case prefix and extra spaces", "  smtp;   550   5.1.1   user unknown  ",
			Reply{550, EnhancedCode{5, 1, 1}, "user unknown"}},
		{"upper case prefix", "SMTP; 550 5.2.2 Mailbox Full", Reply{550, EnhancedCode{5, 2, 2}, "Mailbox Full"}},
		{"prefix without space", "smtp;452 4.5.3 Too many recipients", Reply{452, EnhancedCode{4, 5, 3}, "Too many recipients"}},
		{"flattened by a bounce", "550-5.7.1 This message is 550-5.7.1 likely spam. 550 5.7.1 See the guidelines.",
			Reply{550, EnhancedCode{5, 7, 1}, "This message is\nlikely spam.\nSee the guidelines."}},
		{"repeated code", "550 550-5.1.1 <a@example.org>... User unknown",
			Reply{550, EnhancedCode{5, 1, 1}, "<a@example.org>... User unknown"}},
		{"code repeated after enhanced", "550 5.7.1 550 User Unknown: x@example.org",
			Reply{550, EnhancedCode{5, 7, 1}, "User Unknown: x@example.org"}},
		{"greeting line before the final line", "220 mx.example.org ESMTP ready\r\n421 4.7.0 Try again later, closing connection.",
			Reply{421, EnhancedCode{4, 7, 0}, "Try again later, closing connection."}},
		{"greeting flattened before the final reply", "220-laposte 421 4.2.1 Service refused, please try later. LPN006_107",
			Reply{421, EnhancedCode{4, 2, 1}, "Service refused, please try later. LPN006_107"}},
		{"enhanced code without basic code", "4.7.1 Try again later", Reply{0, EnhancedCode{4, 7, 1}, "Try again later"}},
		{"wrapper text before the code", "delivery temporarily suspended: server refused to talk to me: 421 Service not available",
			Reply{421, EnhancedCode{}, "delivery temporarily suspended: server refused to talk to me:\nService not available"}},
		{"enhanced code inside the text", "501 Rcpt-To validation failed: RCPT TO not accepted: 5.7.1 This system is not configured to relay",
			Reply{501, EnhancedCode{5, 7, 1}, "Rcpt-To validation failed: RCPT TO not accepted: 5.7.1 This system is not configured to relay"}},
		{"Microsoft three-digit detail", "451 4.7.650 The mail server [192.0.2.25] has been temporarily rate limited",
			Reply{451, EnhancedCode{4, 7, 650}, "The mail server [192.0.2.25] has been temporarily rate limited"}},
		{"IP address is not an enhanced code", "550 blocked 5.6.7.8 and 10.4.5.1",
			Reply{550, EnhancedCode{}, "blocked 5.6.7.8 and 10.4.5.1"}},
		{"subject above 7 is not an enhanced code", "421 4.16.55 [TS01] Messages temporarily deferred",
			Reply{421, EnhancedCode{}, "4.16.55 [TS01] Messages temporarily deferred"}},
		{"phone number is not a line", "550 call 555-1234 for help", Reply{550, EnhancedCode{}, "call 555-1234 for help"}},
		{"number in text is not a line", "450 4.2.0 Greylisted for 450 seconds",
			Reply{450, EnhancedCode{4, 2, 0}, "Greylisted for 450 seconds"}},
		{"second reply quoted in the text", "554 4.4.7 Message expired.<421 4.4.2 Connection timed out>",
			Reply{554, EnhancedCode{4, 4, 7}, "Message expired.<421 4.4.2 Connection timed out>"}},
		{"enhanced before the basic code", "5.3.0 - Other mail system problem 550-'Unknown user x@example.jp'",
			Reply{550, EnhancedCode{5, 3, 0}, "- Other mail system problem\n'Unknown user x@example.jp'"}},
		{"blank lines", "\n\n550 5.1.1 gone\n\n", Reply{550, EnhancedCode{5, 1, 1}, "gone"}},
		{"success", "250 2.0.0 OK queued as 12345", Reply{250, EnhancedCode{2, 0, 0}, "OK queued as 12345"}},
		{"go-smtp error string", "SMTP error 550: 5.1.1 user unknown", Reply{550, EnhancedCode{5, 1, 1}, "user unknown"}},
		{"old Exchange report", "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##",
			Reply{550, EnhancedCode{5, 1, 1}, "RESOLVER.ADR.RecipNotFound; not found ##"}},
		{"Postfix bounce text", "<u@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1 <u@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
			Reply{550, EnhancedCode{5, 1, 1}, "<u@example.com>: host mx.example.com[192.0.2.1] said:\n<u@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command)"}},
		{"Exim bounce text", "SMTP error from remote mail server after RCPT TO:<u@example.com>:\n    host mx.example.com [192.0.2.1]: 421 4.7.0 [TSS04] Messages temporarily deferred",
			Reply{421, EnhancedCode{4, 7, 0}, "SMTP error from remote mail server after RCPT TO:<u@example.com>:\nhost mx.example.com [192.0.2.1]:\n[TSS04] Messages temporarily deferred"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.raw)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseMalformed(t *testing.T) {
	for _, raw := range []string{"", "   \r\n  ", "smtp;", "hello world", "99 bottles", "600 nope", "1.2.3 old", "4.8.1 bad subject", "\x00\xff"} {
		t.Run(raw, func(t *testing.T) {
			r, err := Parse(raw)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Zero(t, r.Code)
			assert.True(t, r.Enhanced.IsZero())
			c := Classify(r)
			assert.True(t, c.Transient, "a malformed reply must never be permanent")
			assert.Equal(t, RuleMalformed, c.Rule)
		})
	}
}

func TestMustParse(t *testing.T) {
	assert.Equal(t, 421, MustParse("421 4.4.5 busy").Code)
	assert.Panics(t, func() { MustParse("garbage") })
}

func TestReplyString(t *testing.T) {
	assert.Equal(t, "421 4.4.5 Server busy, try again", Reply{421, EnhancedCode{4, 4, 5}, "Server busy,\ntry again"}.String())
	assert.Equal(t, "550 Host unknown", Reply{Code: 550, Text: "Host unknown"}.String())
	assert.Equal(t, "4.7.1 Try again later", Reply{Enhanced: EnhancedCode{4, 7, 1}, Text: "Try again later"}.String())
	assert.Equal(t, "", Reply{}.String())
	assert.True(t, Reply{Code: 451}.Temporary())
	assert.False(t, Reply{Code: 554, Enhanced: EnhancedCode{4, 4, 7}}.Temporary())
	assert.True(t, Reply{Enhanced: EnhancedCode{4, 7, 1}}.Temporary())
}

func TestEnhancedCodeString(t *testing.T) {
	assert.Equal(t, "4.4.5", EnhancedCode{4, 4, 5}.String())
	assert.Equal(t, "", EnhancedCode{}.String())
	assert.True(t, EnhancedCode{}.IsZero())
}

func TestParseQuotedReplyIsNotALine(t *testing.T) {
	r, err := Parse("530 5.7.57 Client not authenticated to send mail. Error: 535 5.7.3 Authentication unsuccessful")
	require.NoError(t, err)
	assert.Equal(t, Reply{530, EnhancedCode{5, 7, 57}, "Client not authenticated to send mail. Error: 535 5.7.3 Authentication unsuccessful"}, r)
}
