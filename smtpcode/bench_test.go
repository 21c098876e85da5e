package smtpcode

import (
	"runtime"
	"testing"
)

const (
	benchOneLine  = "421 4.4.5 Server busy, try again later. d9443c01a7336-21c7a1b2e1csi12345 - gsmtp"
	benchFallback = "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address - gsmtp"
	benchSixLine  = "550-5.7.26 The MAIL FROM domain [email.example.jp] has an SPF record with a hard fail\r\n" +
		"550-5.7.26 policy (-all) but it fails to pass SPF checks with the ip:\r\n" +
		"550-5.7.26 [203.0.113.22]. To best protect our users from spam and phishing,\r\n" +
		"550-5.7.26 the message has been blocked. For instructions on setting up\r\n" +
		"550-5.7.26 authentication, go to\r\n" +
		"550 5.7.26  https://support.google.com/mail/answer/81126#authentication q2.22 - gsmtp\r\n"
)

var benchSink Classification

func benchmarkParseClassify(b *testing.B, raw string) {
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, cpuOK := threadCPUTime()
	n := 0
	for b.Loop() {
		r, err := Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		benchSink = Classify(r)
		n++
	}
	if end, ok := threadCPUTime(); cpuOK && ok && n > 0 {
		b.ReportMetric(float64(end-start)/float64(n), "cpu-ns/op")
	}
}

// BenchmarkParseClassify measures Parse followed by Classify with every
// built-in rule in place. Goal for the one-line reply: < 1 µs, <= 2 allocs.
func BenchmarkParseClassify(b *testing.B) {
	b.Run("one-line", func(b *testing.B) { benchmarkParseClassify(b, benchOneLine) })
	b.Run("six-line", func(b *testing.B) { benchmarkParseClassify(b, benchSixLine) })
	// A reply that no provider rule claims: it runs through the generic
	// text rules before the enhanced code decides.
	b.Run("one-line-fallback", func(b *testing.B) { benchmarkParseClassify(b, benchFallback) })
}

// TestOneLineAllocations guards the allocation goal of the hot path: a
// one-line reply is parsed and classified without touching the heap.
func TestOneLineAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	for _, raw := range []string{benchOneLine, benchFallback, "452 4.5.3 Too many recipients", "421 4.7.0 [TSS04] deferred, try again in 5 minutes"} {
		allocs := testing.AllocsPerRun(100, func() {
			r, _ := Parse(raw)
			benchSink = Classify(r)
		})
		if allocs > 0 {
			t.Errorf("Parse+Classify(%q): %v allocations, want 0", raw, allocs)
		}
	}
}
