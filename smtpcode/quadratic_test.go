package smtpcode

import (
	"strings"
	"testing"
)

// Parse and Classify must stay linear on hostile input: these would take
// seconds if any step were quadratic.
func TestLinearOnLargeInput(t *testing.T) {
	inputs := []string{
		"550 " + strings.Repeat(" ", 1<<20) + "x",
		"550 " + strings.Repeat("550 ", 1<<17),
		"550 " + strings.Repeat("550-", 1<<17),
		"550 " + strings.Repeat("5.1.1 ", 1<<17),
		strings.Repeat("421-4.4.5 busy\n", 1<<15),
		"451 " + strings.Repeat(" try again in 5", 1<<15),
		"451 " + strings.Repeat("4", 1<<20),
	}
	for _, in := range inputs {
		r, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%.20q...): %v", in, err)
		}
		if c := Classify(r); c.Rule == "" || r.class() < 4 {
			t.Fatalf("Parse(%.20q...) = code %d, %s", in, r.Code, c)
		}
	}
}
