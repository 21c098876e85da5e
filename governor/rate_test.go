package governor

import (
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// The token buckets decide exactly as golang.org/x/time/rate does for the
// same rate and burst, over random arrival times.
func TestBucketsMatchRateLimiter(t *testing.T) {
	tests := []struct {
		r     rate.Limit
		burst int
	}{
		{1, 1}, {10, 1}, {10, 5}, {rate.Every(time.Minute), 2}, {1000, 50}, {3, 0},
	}
	for _, tt := range tests {
		synctest.Test(t, func(t *testing.T) {
			g := newGov(t, &Policy{Default: Limits{Rate: tt.r, Burst: tt.burst}})
			burst := max(tt.burst, 1) // our Burst 0 means 1
			lim := rate.NewLimiter(tt.r, burst)
			rnd := rand.New(rand.NewPCG(uint64(tt.burst), 3))
			mean := time.Duration(float64(time.Second) / float64(tt.r))
			agree := 0
			for i := range 2000 {
				time.Sleep(time.Duration(rnd.Int64N(int64(mean))))
				want := lim.AllowN(time.Now(), 1)
				d, err := g.TryTake("k")
				require.NoError(t, err)
				if !assert.Equal(t, want, d.OK, "event %d, rate %v burst %d", i, tt.r, tt.burst) {
					return
				}
				agree++
			}
			assert.Equal(t, 2000, agree)
		})
	}
}

func TestQuotaPeriods(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	at := time.Date(2026, 3, 29, 1, 30, 0, 0, berlin) // a Sunday; clocks jump at 02:00
	tests := []struct {
		cal        Calendar
		start, end time.Time
	}{
		{Hour, time.Date(2026, 3, 29, 1, 0, 0, 0, berlin), time.Date(2026, 3, 29, 3, 0, 0, 0, berlin)},
		{Day, time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), time.Date(2026, 3, 30, 0, 0, 0, 0, berlin)},
		{Week, time.Date(2026, 3, 23, 0, 0, 0, 0, berlin), time.Date(2026, 3, 30, 0, 0, 0, 0, berlin)},
		{Month, time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), time.Date(2026, 4, 1, 0, 0, 0, 0, berlin)},
	}
	for _, tt := range tests {
		t.Run(tt.cal.String(), func(t *testing.T) {
			s, e := Quota{Max: 1, Calendar: tt.cal, Location: berlin}.Period(at)
			assert.True(t, tt.start.Equal(s), "start %v", s)
			assert.True(t, tt.end.Equal(e), "end %v", e)
		})
	}
	// The repeated hour of a fall-back: the second 02:30 is in its own hour.
	second := time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC) // 02:30 CET, the second 02:30
	s0, e0 := Quota{Max: 1, Calendar: Hour, Location: berlin}.Period(second)
	assert.True(t, second.Add(-30*time.Minute).Equal(s0), "start %v", s0)
	assert.Equal(t, time.Hour, e0.Sub(s0))
	assert.True(t, e0.After(second))
	// Send windows keep wall-clock times across the spring-forward change.
	w := Window{Start: 9 * time.Hour, End: 17 * time.Hour, Location: berlin}
	sat := time.Date(2026, 3, 28, 18, 0, 0, 0, berlin)
	assert.True(t, time.Date(2026, 3, 29, 9, 0, 0, 0, berlin).Equal(w.NextOpen(sat)))
	assert.Equal(t, 14*time.Hour, w.NextOpen(sat).Sub(sat), "one hour less overnight")

	// The day of a daylight-saving change is 23 hours long.
	s, e := PerDay(2, berlin).Period(at)
	assert.Equal(t, 23*time.Hour, e.Sub(s))
}

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"*c", "abc", true}, {"a?c", "abc", true},
		{"a?c", "ac", false}, {"*b*", "abc", true}, {"ip:*|site:*", "ip:1|site:x", true},
		{"ip:*|site:*", "site:x", false}, {"abc", "abd", false}, {"a**c", "abbbc", true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, matchGlob(tt.p, tt.s), "%q ~ %q", tt.p, tt.s)
	}
}
