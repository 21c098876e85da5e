package smtpcode

import (
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func classifyRaw(t *testing.T, raw string) Classification {
	t.Helper()
	r, err := Parse(raw)
	require.NoError(t, err)
	return Classify(r)
}

func TestClassifyThrottlingFamily(t *testing.T) {
	tests := []struct {
		raw       string
		transient bool
		category  Category
		scope     Scope
		rule      string
		retry     time.Duration
	}{
		{"421 4.4.5 Server busy, try again later. - gsmtp", true, Congestion, ScopeConnection, "gmail-4.4.5", 30 * time.Second},
		{"421 4.4.5 Too many concurrent connections", true, Congestion, ScopeConnection, "text-congestion", 0},
		{"421 4.4.5 Mail system congestion", true, Congestion, ScopeConnection, "rfc3463-x.4.5", 0},
		{"452 4.4.5 Messages per second limit exceeded", true, RateLimit, ScopeSession, "x.4.5-rate-limit-text", 0},
		{"452 4.4.5 Insufficient disk space; try again later", true, System, ScopeConnection, "text-system-storage", 0},
		{"421 4.7.28 Gmail has detected an unusual rate of mail", true, RateLimit, ScopeConnection, "gmail-4.7.28", 0},
		{"450 4.2.1 The user you are trying to contact is receiving mail too quickly.", true, RateLimit, ScopeRecipient, "gmail-x.2.1-receiving-rate", 0},
		{"550 5.2.1 The user you are trying to contact is receiving mail at a rate that\n550 5.2.1 prevents additional messages", false, RateLimit, ScopeRecipient, "gmail-x.2.1-receiving-rate", 0},
		{"550 5.2.1 The email account that you tried to reach is disabled.", false, UnknownUser, ScopeRecipient, "rfc3463-x.2.1", 0},
		{"421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", true, Reputation, ScopeConnection, "yahoo-tss04", 0},
		{"421 4.7.0 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.", true, Reputation, ScopeConnection, "yahoo-ts03", 0},
		{"451 4.7.650 The mail server [192.0.2.25] has been temporarily rate limited due to IP reputation.", true, Reputation, ScopeConnection, "microsoft-4.7.650", 0},
		{"451 4.7.500 Server busy. Please try again later from [192.0.2.2]. (AS761)", true, RateLimit, ScopeConnection, "microsoft-4.7.5xx-throttle", 0},
		{"550 5.7.606 Access denied, banned sending IP [198.51.100.222].", false, Reputation, ScopeConnection, "microsoft-5.7.606-banned-ip", 0},
		{"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", false, UnknownUser, ScopeRecipient, "microsoft-5.1.10", 0},
		{"550 5.1.10 Recipient address has null MX", false, UnknownDomain, ScopeRecipient, "rfc7505-x.1.10", 0},
		{"421 mx.comcast.net comcast Too many sessions opened", true, Congestion, ScopeConnection, "comcast-too-many-sessions", 0},
		{"450 4.2.0 <a@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", true, Greylist, ScopeRecipient, "text-greylist", 5 * time.Minute},
		{"451 4.7.1 Greylisting in action, please come back in 00:05:00", true, Greylist, ScopeRecipient, "text-greylist", 5 * time.Minute},
		{"450 4.7.1 Greylisted, please try again in 92 seconds", true, Greylist, ScopeRecipient, "text-greylist", 92 * time.Second},
		{"452 4.5.3 Your message has too many recipients.", true, RateLimit, ScopeMessage, "text-too-many-recipients", 0},
		{"552 Too many recipients", true, RateLimit, ScopeMessage, RuleTooManyRecipients, 0},
		{"550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", false, Authentication, ScopeMessage, "gmail-x.7.26", 0},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			c := classifyRaw(t, tt.raw)
			assert.Equal(t, tt.transient, c.Transient, "transient: %s", c)
			assert.Equal(t, tt.category, c.Category, "category: %s", c)
			assert.Equal(t, tt.scope, c.Scope, "scope: %s", c)
			assert.Equal(t, tt.rule, c.Rule)
			assert.Equal(t, tt.retry, c.RetryAfter)
		})
	}
}

// When the basic code and the enhanced class disagree, the basic code
// decides Transient and the enhanced subject/detail decide the category.
func TestClassifyDisagreement(t *testing.T) {
	c := Classify(Reply{Code: 451, Enhanced: EnhancedCode{5, 7, 3}, Text: "Security conversion required"})
	assert.True(t, c.Transient)
	assert.Equal(t, Policy, c.Category)
	assert.Equal(t, "rfc3463-x.7.3", c.Rule)

	c = Classify(Reply{Code: 554, Enhanced: EnhancedCode{4, 4, 7}, Text: "Message expired"})
	assert.False(t, c.Transient)
	assert.Equal(t, Other, c.Category)
	assert.Equal(t, "rfc3463-x.4.7", c.Rule)

	// Without a basic code the enhanced class decides.
	assert.True(t, Classify(Reply{Enhanced: EnhancedCode{4, 7, 1}, Text: "Try again later"}).Transient)
	assert.False(t, Classify(Reply{Enhanced: EnhancedCode{5, 1, 1}}).Transient)
}

func TestClassifyFallbacks(t *testing.T) {
	tests := []struct {
		r    Reply
		cat  Category
		rule string
		tr   bool
	}{
		{Reply{Code: 421}, Congestion, "rfc5321-421", true},
		{Reply{Code: 421, Enhanced: EnhancedCode{4, 0, 0}}, Congestion, "rfc5321-421", true},
		{Reply{Code: 551}, UnknownUser, "rfc5321-551", false},
		{Reply{Code: 459}, Other, "rfc5321-4xx", true},
		{Reply{Code: 599}, Other, "rfc5321-5xx", false},
		{Reply{Code: 550, Enhanced: EnhancedCode{5, 7, 999}}, Policy, "rfc3463-x.7.x", false},
		{Reply{Code: 250, Enhanced: EnhancedCode{2, 0, 0}}, Other, RuleSuccess, false},
		{Reply{Code: 354}, Other, RuleSuccess, false},
		{Reply{Code: 0, Text: "garbage"}, Other, RuleMalformed, true},
		{Reply{Code: 999}, Other, RuleMalformed, true},
		{Reply{Code: -5, Enhanced: EnhancedCode{9, 9, 9}}, Other, RuleMalformed, true},
	}
	for _, tt := range tests {
		c := Classify(tt.r)
		assert.Equal(t, tt.cat, c.Category, "%+v: %s", tt.r, c)
		assert.Equal(t, tt.rule, c.Rule, "%+v", tt.r)
		assert.Equal(t, tt.tr, c.Transient, "%+v", tt.r)
	}
}

func TestUserRulesComeFirst(t *testing.T) {
	c := NewClassifier(
		Rule{Name: "acme-throttle", Code: 451, Contains: []string{"ACME   rate\ncontrol"}, Category: RateLimit, Scope: ScopeConnection, RetryAfter: time.Minute},
		Rule{Enhanced: EnhancedCode{0, 1, 1}, Contains: []string{"on vacation"}, Category: Other, Transient: AlwaysTransient},
		Rule{Name: "never-bounce-garbage", Contains: []string{"zzz"}, Category: Spam, Transient: AlwaysPermanent},
		Rule{Name: "acme-range", Enhanced: EnhancedCode{5, 7, 800}, EnhancedTo: EnhancedCode{5, 7, 810}, Category: Reputation},
	)
	got := c.Classify(MustParse("451 4.3.0 acme RATE control engaged"))
	assert.Equal(t, "acme-throttle", got.Rule)
	assert.Equal(t, RateLimit, got.Category)
	assert.Equal(t, ScopeConnection, got.Scope)
	assert.Equal(t, time.Minute, got.RetryAfter)

	got = c.Classify(MustParse("451 4.3.0 acme rate control engaged, retry in 5 minutes"))
	assert.Equal(t, 5*time.Minute, got.RetryAfter, "the server's own hint wins over the rule's")

	got = c.Classify(MustParse("550 5.1.1 user on vacation"))
	assert.Equal(t, "user-1", got.Rule)
	assert.True(t, got.Transient)

	got = c.Classify(MustParse("550 5.7.805 denied"))
	assert.Equal(t, "acme-range", got.Rule)
	got = c.Classify(MustParse("550 5.7.811 denied"))
	assert.NotEqual(t, "acme-range", got.Rule)

	// A permanent-forcing rule applies to real replies...
	assert.False(t, c.Classify(MustParse("451 zzz")).Transient)
	// ...but never to a reply without a code.
	assert.True(t, c.Classify(Reply{Text: "zzz"}).Transient)

	// The default classifier is untouched.
	assert.NotEqual(t, "acme-throttle", Classify(MustParse("451 4.3.0 acme rate control engaged")).Rule)
	// Built-in rules still apply after the user's.
	assert.Equal(t, "gmail-4.7.28", c.Classify(MustParse("421 4.7.28 rate")).Rule)
}

func TestDefaultRulesIsACopy(t *testing.T) {
	rules := DefaultRules()
	require.NotEmpty(t, rules)
	rules[0].Name = "changed"
	rules[0].Contains[0] = "changed"
	assert.NotEqual(t, "changed", DefaultRules()[0].Name)
	assert.NotEqual(t, "changed", DefaultRules()[0].Contains[0])
	names := map[string]bool{}
	for _, r := range DefaultRules() {
		assert.NotEmpty(t, r.Name)
		assert.False(t, names[r.Name], "duplicate rule name %s", r.Name)
		names[r.Name] = true
		indexed := r.Code != 0 || r.Class != 0 || !r.Enhanced.IsZero()
		assert.True(t, indexed || len(r.Contains)+len(r.ContainsAny) > 0, "rule %s matches everything", r.Name)
	}
}

func TestRetryHints(t *testing.T) {
	tests := []struct {
		text string
		want time.Duration
	}{
		{"try again in 92 seconds", 92 * time.Second},
		{"Please retry in 5 minutes", 5 * time.Minute},
		{"retry after 1 hour", time.Hour},
		{"Greylisted for 300 seconds", 300 * time.Second},
		{"please come back in 00:05:00", 5 * time.Minute},
		{"come back in 4:30", 4*time.Minute + 30*time.Second},
		{"try again in 30s", 30 * time.Second},
		{"wait 10 min", 10 * time.Minute},
		{"try again in 999999 hours", maxHint},
		{"try again in 1234567 seconds", 0},
		{"sent 500 messages in 1 hour", 0},
		{"try again in 5", 0},
		{"try again later", 0},
		{"come back in 00:", 0},
	}
	for _, tt := range tests {
		var buf [64]byte
		assert.Equal(t, tt.want, retryHint(normalize(buf[:0], tt.text)), tt.text)
	}
	// Permanent replies carry no hint.
	assert.Zero(t, classifyRaw(t, "550 5.7.1 try again in 92 seconds").RetryAfter)
}

func TestNamesAndText(t *testing.T) {
	want := []string{"other", "congestion", "rate_limit", "greylist", "mailbox_full", "unknown_user", "unknown_domain",
		"relay_denied", "policy", "reputation", "spam", "authentication", "tls", "message_size", "syntax", "credentials",
		"system", "network"}
	for i, name := range want {
		c := Category(i)
		assert.Equal(t, name, c.String())
		p, err := ParseCategory(name)
		require.NoError(t, err)
		assert.Equal(t, c, p)
	}
	assert.Equal(t, "Category(200)", Category(200).String())
	_, err := ParseCategory("nope")
	assert.Error(t, err)
	_, err = Category(200).MarshalText()
	assert.Error(t, err)

	for i, name := range []string{"unknown", "connection", "session", "recipient", "message"} {
		s := Scope(i)
		assert.Equal(t, name, s.String())
		p, err := ParseScope(name)
		require.NoError(t, err)
		assert.Equal(t, s, p)
	}
	assert.Equal(t, "Scope(9)", Scope(9).String())
	_, err = ParseScope("nope")
	assert.Error(t, err)

	b, err := json.Marshal(Classification{Transient: true, Category: RateLimit, Scope: ScopeConnection, Rule: "gmail-4.7.28"})
	require.NoError(t, err)
	assert.JSONEq(t, `{"Transient":true,"Category":"rate_limit","Scope":"connection","Rule":"gmail-4.7.28","RetryAfter":0}`, string(b))
	var back Classification
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, RateLimit, back.Category)
	assert.Equal(t, ScopeConnection, back.Scope)
	assert.Error(t, json.Unmarshal([]byte(`{"Category":"bogus"}`), &back))

	assert.Equal(t, "transient rate_limit scope=connection rule=gmail-4.4.5 retry_after=30s",
		Classification{Transient: true, Category: RateLimit, Scope: ScopeConnection, Rule: "gmail-4.4.5", RetryAfter: 30 * time.Second}.String())
	assert.Equal(t, "permanent unknown_user scope=recipient rule=rfc3463-x.1.1",
		Classification{Category: UnknownUser, Scope: ScopeRecipient, Rule: "rfc3463-x.1.1"}.String())
}

func TestConcurrentClassify(t *testing.T) {
	c := NewClassifier(Rule{Name: "x", Code: 451, Category: RateLimit})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				_ = c.Classify(MustParse("451 4.7.1 x"))
				_ = Classify(MustParse("421 4.4.5 busy"))
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func TestSuccessString(t *testing.T) {
	assert.Equal(t, "success rule=rfc5321-success", Classify(MustParse("250 2.0.0 OK")).String())
	assert.Equal(t, "success rule=no-error", ClassifyError(nil).String())
}

func TestNilAndZeroClassifier(t *testing.T) {
	var nilC *Classifier
	var zero Classifier
	r := MustParse("421 4.7.28 rate")
	assert.Equal(t, Classify(r), nilC.Classify(r))
	assert.Equal(t, Classify(r), zero.Classify(r))
	assert.Equal(t, ClassifyError(io.EOF), nilC.ClassifyError(io.EOF))
}

func TestCodesLie(t *testing.T) {
	tests := []struct {
		raw string
		cat Category
	}{
		{"452 4.4.5 Messages per second limit exceeded", RateLimit},
		{"550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.", RateLimit},
		{"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", UnknownUser},
		{"550 5.4.5 Daily user sending quota exceeded.", RateLimit},
		{"554 5.7.1 Your sending quota exceeded for today", RateLimit},
		{"552 5.2.2 Mailbox quota exceeded", MailboxFull},
		{"550 5.7.1 User unknown", UnknownUser},
		{"550 5.1.1 Refused due to recipient preferences", Policy},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.cat, classifyRaw(t, tt.raw).Category, tt.raw)
	}
}
