package governor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Window.Open, Window.NextOpen and the governor's own send-window check
// (engine windowAt, reached here through the MemoryStore with explicit
// times) agree, including for windows that never open.
func TestWindowOpenAgreesWithGovernor(t *testing.T) {
	fri := time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC) // a Friday, 12:00
	nineToFive := Window{Start: 9 * time.Hour, End: 17 * time.Hour}
	night := Window{Start: 22 * time.Hour, End: 6 * time.Hour}
	tests := []struct {
		name  string
		w     Window
		now   time.Time
		open  bool
		never bool // NextOpen is zero
	}{
		{"zero window", Window{}, fri, true, false},
		{"before start", nineToFive, fri.Add(-3*time.Hour - time.Nanosecond), false, false},
		{"at start", nineToFive, fri.Add(-3 * time.Hour), true, false},
		{"inside", nineToFive, fri, true, false},
		{"at end", nineToFive, fri.Add(5 * time.Hour), false, false},
		{"wrap: evening", night, fri.Add(11 * time.Hour), true, false},
		{"wrap: early morning", night, fri.Add(-7 * time.Hour), true, false},
		{"wrap: at end", night, fri.Add(-6 * time.Hour), false, false},
		{"wrap: midday", night, fri, false, false},
		{"days: not today", Window{Start: 9 * time.Hour, End: 17 * time.Hour, Days: []time.Weekday{time.Monday}}, fri, false, false},
		{"days: today", Window{Start: 9 * time.Hour, End: 17 * time.Hour, Days: []time.Weekday{time.Friday}}, fri, true, false},
		{"whole day: not today", Window{Days: []time.Weekday{time.Saturday}}, fri, false, false},
		{"whole day: today", Window{Days: []time.Weekday{time.Friday}}, fri, true, false},
		{"never: 24h to 0", Window{Start: 24 * time.Hour, End: 0}, fri, false, true},
		{"never: no valid weekday", Window{Start: 9 * time.Hour, End: 17 * time.Hour, Days: []time.Weekday{7}}, fri, false, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.open, tt.w.Open(tt.now), "Open")
			next := tt.w.NextOpen(tt.now)
			assert.Equal(t, tt.never, next.IsZero(), "NextOpen %v", next)
			assert.Equal(t, tt.open, next.Equal(tt.now), "NextOpen %v is now iff open", next)

			ms := NewMemoryStore(0)
			req := &Request{Kind: KindEvent, Keys: []string{"k"}, Limits: []Limits{{Window: tt.w}},
				Now: tt.now, Try: true, Ticket: "t" + strconv.Itoa(i)}
			g, err := ms.Reserve(context.Background(), req)
			require.NoError(t, err)
			assert.Equal(t, tt.open, g.OK, "the governor's check")
			if !tt.open {
				assert.Equal(t, LimitWindow, g.Decision.Limit)
				assert.True(t, next.Equal(g.Decision.RetryAt), "RetryAt %v, NextOpen %v", g.Decision.RetryAt, next)
			}
		})
	}
}
