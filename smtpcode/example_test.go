package smtpcode_test

import (
	"context"
	"fmt"

	"github.com/emersion/go-smtp"
	"github.com/sluicemail/sluice/smtpcode"
)

func ExampleParse() {
	// A reply as go-smtp's server writes it: the enhanced code on the last line.
	r, err := smtpcode.Parse("421-Too many concurrent connections from your IP\r\n421 4.4.5 Try again later\r\n")
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Code, r.Enhanced, r.Enhanced.Name())
	fmt.Printf("%q\n", r.Text)

	// A Diagnostic-Code from a bounce, flattened into one line.
	r, _ = smtpcode.Parse("smtp; 550-5.1.1 The email account that you tried to reach does 550-5.1.1 not exist. 550 5.1.1 - gsmtp")
	fmt.Println(r)

	_, err = smtpcode.Parse("connection lost")
	fmt.Println(err)
	// Output:
	// 421 4.4.5 Mail system congestion
	// "Too many concurrent connections from your IP\nTry again later"
	// 550 5.1.1 The email account that you tried to reach does not exist. - gsmtp
	// smtpcode: malformed reply: no reply code in "connection lost"
}

func ExampleClassify() {
	for _, raw := range []string{
		"421 4.7.28 Gmail has detected an unusual rate of mail originating from your IP address.",
		"421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
		"451 4.7.1 Greylisted, please try again in 92 seconds",
		"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
		"552 Too many recipients",
	} {
		fmt.Println(smtpcode.Classify(smtpcode.MustParse(raw)))
	}
	// Output:
	// transient rate_limit scope=connection rule=gmail-4.7.28
	// transient reputation scope=connection rule=yahoo-tss04
	// transient greylist scope=recipient rule=text-greylist retry_after=1m32s
	// permanent unknown_user scope=recipient rule=microsoft-5.1.10
	// transient rate_limit scope=message rule=rfc5321-552-too-many-recipients
}

func ExampleFromError() {
	// go-smtp's client keeps only the first line's enhanced code; this
	// server put it on the last line, so the error carries none.
	err := fmt.Errorf("rcpt: %w", &smtp.SMTPError{
		Code:    550,
		Message: "The email account that you tried to reach does not exist.\n5.1.1 Please check the address.",
	})
	r, ok := smtpcode.FromError(err)
	fmt.Println(ok, r.Code, r.Enhanced)
	fmt.Println(smtpcode.ClassifyError(err))
	// Output:
	// true 550 5.1.1
	// permanent unknown_user scope=recipient rule=rfc3463-x.1.1
}

func ExampleClassifyError() {
	fmt.Println(smtpcode.ClassifyError(context.Canceled))
	fmt.Println(smtpcode.ClassifyError(context.DeadlineExceeded))
	// Output:
	// transient other scope=unknown rule=context-canceled
	// transient network scope=connection rule=context-deadline
}

func ExampleNewClassifier() {
	c := smtpcode.NewClassifier(smtpcode.Rule{
		Name:     "acme-throttle",
		Code:     451,
		Contains: []string{"ACME rate control"},
		Category: smtpcode.RateLimit,
		Scope:    smtpcode.ScopeConnection,
	})
	fmt.Println(c.Classify(smtpcode.MustParse("451 4.3.0 acme rate control, retry in 5 minutes")))
	// Output:
	// transient rate_limit scope=connection rule=acme-throttle retry_after=5m0s
}
