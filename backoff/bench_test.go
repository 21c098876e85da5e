package backoff

import (
	"testing"
	"time"

	"github.com/sluicemail/sluice/smtpcode"
)

func BenchmarkNextAttempt(b *testing.B) {
	var p Policy
	c := transient(smtpcode.System)
	for _, attempt := range []int{1, 30} {
		b.Run(map[int]string{1: "attempt=1", 30: "attempt=30"}[attempt], func(b *testing.B) {
			b.ReportAllocs()
			now := t0.Add(time.Hour)
			for b.Loop() {
				if _, err := p.NextAttempt(c, attempt, t0, now, mid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
