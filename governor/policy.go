package governor

import (
	"fmt"
	"time"
)

// Policy gives each key its Limits: the Limits of an exact key in Keys if
// there is one, else those of the first Pattern that matches the key, else
// Default. A Governor's policy can be replaced at run time (SetPolicy)
// without losing any key's state: held slots, tokens, quota counts,
// suspensions and adapted limits carry over, and waiters re-check at once.
type Policy struct {
	Default  Limits
	Keys     map[string]Limits
	Patterns []Pattern
}

// Pattern gives Limits to every key its glob matches. In Match, '*' matches
// any run of bytes (including none) and '?' exactly one byte; every other
// byte matches itself. "ip:*" is a prefix pattern, "*|site:google.com" a
// suffix pattern, "ip:203.0.113.*|site:*" a glob.
type Pattern struct {
	Match  string
	Limits Limits
}

// LimitsFor returns the Limits the policy gives key. A nil Policy gives the
// zero Limits (no limit) to every key.
func (p *Policy) LimitsFor(key string) Limits {
	if p == nil {
		return Limits{}
	}
	if l, ok := p.Keys[key]; ok {
		return l
	}
	for i := range p.Patterns {
		if matchGlob(p.Patterns[i].Match, key) {
			return p.Patterns[i].Limits
		}
	}
	return p.Default
}

// Validate reports the first invalid part of the policy as a *PolicyError
// wrapping ErrInvalidPolicy. A nil Policy is valid.
func (p *Policy) Validate() error {
	if p == nil {
		return nil
	}
	if err := p.Default.validate(); err != nil {
		return &PolicyError{Where: "Default", Err: err}
	}
	for k, l := range p.Keys {
		if k == "" {
			return &PolicyError{Where: `Keys[""]`, Err: errEmptyKey}
		}
		if err := l.validate(); err != nil {
			return &PolicyError{Where: fmt.Sprintf("Keys[%q]", k), Err: err}
		}
	}
	for i, pt := range p.Patterns {
		if pt.Match == "" {
			return &PolicyError{Where: fmt.Sprintf("Patterns[%d]", i), Err: errEmptyPattern}
		}
		if err := pt.Limits.validate(); err != nil {
			return &PolicyError{Where: fmt.Sprintf("Patterns[%d] %q", i, pt.Match), Err: err}
		}
	}
	return nil
}

// validate checks one Limits value.
func (l *Limits) validate() error {
	switch {
	case l.MaxConcurrency < 0:
		return fmt.Errorf("MaxConcurrency %d is negative", l.MaxConcurrency)
	case l.Rate < 0 || l.Rate != l.Rate:
		return fmt.Errorf("Rate %v is negative or NaN", float64(l.Rate))
	case l.Burst < 0:
		return fmt.Errorf("Burst %d is negative", l.Burst)
	case l.ConnectionRate < 0 || l.ConnectionRate != l.ConnectionRate:
		return fmt.Errorf("ConnectionRate %v is negative or NaN", float64(l.ConnectionRate))
	case l.ConnectionBurst < 0:
		return fmt.Errorf("ConnectionBurst %d is negative", l.ConnectionBurst)
	case l.Jitter < 0:
		return fmt.Errorf("Jitter %v is negative", l.Jitter)
	}
	q := l.Quota
	switch {
	case q.Max < 0:
		return fmt.Errorf("Quota.Max %d is negative", q.Max)
	case q.Calendar > Month:
		return fmt.Errorf("Quota.Calendar %v is unknown", q.Calendar)
	case q.Max > 0 && q.Calendar == Rolling && q.Window <= 0:
		return fmt.Errorf("Quota.Window %v must be positive for a rolling quota", q.Window)
	}
	w := l.Window
	switch {
	case w.Start < 0 || w.Start > 24*time.Hour:
		return fmt.Errorf("Window.Start %v is outside [0, 24h]", w.Start)
	case w.End < 0 || w.End > 24*time.Hour:
		return fmt.Errorf("Window.End %v is outside [0, 24h]", w.End)
	}
	for _, d := range w.Days {
		if d < time.Sunday || d > time.Saturday {
			return fmt.Errorf("Window.Days holds an invalid weekday %d", int(d))
		}
	}
	a := l.Adaptive
	switch {
	case a.InitialConcurrency < 0:
		return fmt.Errorf("Adaptive.InitialConcurrency %d is negative", a.InitialConcurrency)
	case a.Increase < 0 || a.Increase != a.Increase:
		return fmt.Errorf("Adaptive.Increase %v is negative or NaN", a.Increase)
	case a.Decrease < 0 || a.Decrease >= 1 || a.Decrease != a.Decrease:
		return fmt.Errorf("Adaptive.Decrease %v is outside [0, 1)", a.Decrease)
	case a.RateFactor < 0 || a.RateFactor >= 1 || a.RateFactor != a.RateFactor:
		return fmt.Errorf("Adaptive.RateFactor %v is outside [0, 1)", a.RateFactor)
	case a.ProbeAfter < 0 || a.SuspendFor < 0 || a.RateFor < 0 || a.RatePause < 0:
		return fmt.Errorf("Adaptive durations must not be negative")
	case a.FailureCohort < 0:
		return fmt.Errorf("Adaptive.FailureCohort %d is negative", a.FailureCohort)
	}
	return nil
}

// matchGlob reports whether s matches pattern ('*' any run, '?' one byte).
func matchGlob(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
