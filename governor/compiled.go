package governor

import (
	"golang.org/x/time/rate"
	"math"
)

// climits is a Limits value prepared for the hot path: durations in
// nanoseconds, defaults applied.
type climits struct {
	raw Limits

	maxConc int // 0: unlimited

	ival, tau   int64 // event bucket: emission interval (0: unlimited), burst tolerance
	civl, ctau  int64 // connection bucket
	qmax        int
	qwin        int64
	qcal        Calendar
	winOn       bool
	jitter      int64
	initial     float64
	increase    float64
	decrease    float64
	probeAfter  int64
	cohort      int
	suspendFor  int64
	rateFactor  float64
	rateFor     int64
	ratePause   int64
	limitedRate bool // ival or civl set
}

// compiledPolicy is a Policy with its Limits prepared.
type compiledPolicy struct {
	p        *Policy
	def      *climits
	exact    map[string]*climits
	patterns []cpattern

	// replaced is closed when SetPolicy replaces this policy, so that calls
	// waiting on a Store re-check at once with the new limits.
	replaced chan struct{}
}

type cpattern struct {
	match string
	lim   *climits
}

func compilePolicy(p *Policy) (*compiledPolicy, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cp := &compiledPolicy{p: p, replaced: make(chan struct{})}
	if p == nil {
		cp.def = compileLimits(Limits{})
		return cp, nil
	}
	cp.def = compileLimits(p.Default)
	if len(p.Keys) > 0 {
		cp.exact = make(map[string]*climits, len(p.Keys))
		for k, l := range p.Keys {
			cp.exact[k] = compileLimits(l)
		}
	}
	for _, pt := range p.Patterns {
		cp.patterns = append(cp.patterns, cpattern{pt.Match, compileLimits(pt.Limits)})
	}
	return cp, nil
}

func (cp *compiledPolicy) lookup(key string) *climits {
	if l, ok := cp.exact[key]; ok {
		return l
	}
	for i := range cp.patterns {
		if matchGlob(cp.patterns[i].match, key) {
			return cp.patterns[i].lim
		}
	}
	return cp.def
}

// interval converts a rate in events per second to nanoseconds per event;
// 0 for unlimited.
func interval(r float64) int64 {
	if r <= 0 || math.IsInf(r, 1) {
		return 0
	}
	iv := 1e9 / r
	if iv < 1 {
		return 1
	}
	if iv > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(iv)
}

func burstOf(b int) int64 {
	if b <= 0 {
		return 1
	}
	return int64(b)
}

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/4/b {
		return math.MaxInt64 / 4
	}
	return a * b
}

func compileLimits(l Limits) *climits {
	c := &climits{raw: l, maxConc: l.MaxConcurrency}
	c.ival = interval(float64(l.Rate))
	c.tau = satMul(c.ival, burstOf(l.Burst))
	c.civl = interval(float64(l.ConnectionRate))
	c.ctau = satMul(c.civl, burstOf(l.ConnectionBurst))
	c.limitedRate = c.ival > 0 || c.civl > 0
	if l.Quota.Max > 0 {
		c.qmax = l.Quota.Max
		c.qwin = int64(l.Quota.Window)
		c.qcal = l.Quota.Calendar
	}
	c.winOn = !l.Window.always()
	c.jitter = int64(l.Jitter)
	a := l.Adaptive
	c.initial = float64(l.MaxConcurrency)
	if a.InitialConcurrency > 0 && a.InitialConcurrency < l.MaxConcurrency {
		c.initial = float64(a.InitialConcurrency)
	}
	d := a.WithDefaults()
	c.increase = d.Increase
	c.decrease = d.Decrease
	c.probeAfter = int64(d.ProbeAfter)
	c.cohort = a.FailureCohort
	c.suspendFor = int64(d.SuspendFor)
	c.rateFactor = d.RateFactor
	c.rateFor = int64(d.RateFor)
	c.ratePause = int64(d.RatePause)
	return c
}

// ratePerSecond converts an emission interval back to a rate.
func ratePerSecond(iv int64) rate.Limit { return rate.Limit(1e9 / float64(iv)) }
