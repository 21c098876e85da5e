package governor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestAdaptiveWithDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Adaptive
		want Adaptive
	}{
		{
			name: "zero gets every fixed default",
			in:   Adaptive{},
			want: Adaptive{
				Increase: DefaultIncrease, Decrease: DefaultDecrease, ProbeAfter: DefaultProbeAfter,
				SuspendFor: DefaultSuspendFor, RateFactor: DefaultRateFactor, RateFor: DefaultRateFor,
				RatePause: DefaultRatePause,
			},
		},
		{
			name: "set fields and state-dependent ones are kept",
			in: Adaptive{
				InitialConcurrency: 3, FailureCohort: 7, Increase: 2, Decrease: 0.25,
				ProbeAfter: time.Minute, SuspendFor: time.Hour, RateFactor: 0.1,
				RateFor: 2 * time.Minute, RatePause: time.Second,
			},
			want: Adaptive{
				InitialConcurrency: 3, FailureCohort: 7, Increase: 2, Decrease: 0.25,
				ProbeAfter: time.Minute, SuspendFor: time.Hour, RateFactor: 0.1,
				RateFor: 2 * time.Minute, RatePause: time.Second,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.in.WithDefaults())
		})
	}
}
