package smtpcode

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

var fuzzSeeds = []string{
	"",
	"421 4.4.5 Server busy, try again later.",
	"550-5.1.1 a\r\n550-5.1.1 b\r\n550 5.1.1 c\r\n",
	"421-Too many\n421 4.4.5 Try later",
	"smtp; 550 5.2.2 Mailbox Full",
	"SMTP;550 550-5.1.1 <x>... User unknown",
	"550-5.7.1 a 550-5.7.1 b 550 5.7.1 c",
	"220-laposte 421 4.2.1 Service refused",
	"4.7.1 Try again later",
	"5.3.0 - Other 550-'Unknown user'",
	"554 4.4.7 expired.<421 4.4.2 timed out>",
	"450 4.7.1 Greylisting in action, please come back in 00:05:00",
	"450 try again in 999999999999 seconds",
	"1.2.3.4.5.6.7.8 555-1234 999 4.99.9999",
	"550 5.7.1 550 550 550-",
	"\x00\xff\xfe 421\r\r\n\n-",
	"421 4.7.0 [TSS04] deferred come back in 1:2:3:4",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if r.Code != 0 || !r.Enhanced.IsZero() {
				t.Fatalf("error with codes: %+v", r)
			}
		} else {
			if r.Code == 0 && r.Enhanced.IsZero() {
				t.Fatalf("no error and no code for %q", raw)
			}
			if r.Code != 0 && (r.Code < 200 || r.Code > 559) {
				t.Fatalf("invalid basic code %d from %q", r.Code, raw)
			}
			if !r.Enhanced.IsZero() && (!validClass(r.Enhanced.Class) || r.Enhanced.Subject > 7 || r.Enhanced.Detail > 999) {
				t.Fatalf("invalid enhanced code %v from %q", r.Enhanced, raw)
			}
		}
		if len(r.Text) > len(raw) {
			t.Fatalf("text longer than input")
		}
		c := Classify(r)
		if r.Code == 0 && r.Enhanced.IsZero() && !c.Transient {
			t.Fatalf("malformed reply classified permanent: %s", c)
		}
		if c.Rule == "" {
			t.Fatalf("no rule named for %q", raw)
		}
		if want, ok := referenceRule(defaultRules, r); ok && c.Rule != want {
			t.Fatalf("%q: classified by %s, the rules in order say %s", raw, c.Rule, want)
		}
		if c.RetryAfter < 0 || c.RetryAfter > maxHint {
			t.Fatalf("retry hint %v out of range", c.RetryAfter)
		}
		_ = r.String()
		_ = r.Enhanced.Name()
		// Parsing our own one-line form finds the same codes.
		if err == nil && r.Code != 0 && r.Text == "" {
			again, err := Parse(r.String())
			if err != nil || again.Code != r.Code || again.Enhanced != r.Enhanced {
				t.Fatalf("round trip of %q: %+v %v", r.String(), again, err)
			}
		}
	})
}

func FuzzFromError(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(550, 5, 1, 1, s)
		f.Add(421, 0, 0, 0, s)
	}
	f.Add(0, -1, -1, -1, "5.1.1 x")
	f.Add(-7, 9, 99, 999, "4.4.5 y\n4.4.5 z")
	f.Fuzz(func(t *testing.T, code, class, subject, detail int, msg string) {
		errs := []error{
			&smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: msg},
			fmt.Errorf("wrapped: %w", &textproto.Error{Code: code, Msg: msg}),
		}
		for _, err := range errs {
			r, ok := FromError(err)
			if !ok {
				t.Fatalf("FromError(%v) not ok", err)
			}
			if r.Code != 0 && (r.Code < 200 || r.Code > 599) {
				t.Fatalf("invalid code %d", r.Code)
			}
			if code >= 200 && code <= 599 && r.Code != code {
				t.Fatalf("code %d became %d", code, r.Code)
			}
			c := ClassifyError(err)
			if r.Code == 0 && r.Enhanced.IsZero() && !c.Transient {
				t.Fatalf("malformed reply classified permanent: %s", c)
			}
			if strings.Contains(c.Rule, "context") {
				t.Fatalf("reply classified as context error")
			}
		}
	})
}
