package smtpcode

import (
	"slices"
	"strconv"
	"time"
)

// Transience says how a rule sets Classification.Transient.
type Transience int8

const (
	// TransientFromCode keeps what the reply's code says: 4xx transient,
	// 5xx permanent (the enhanced class when there is no basic code).
	TransientFromCode Transience = iota
	// AlwaysTransient makes the reply transient whatever its code, as
	// RFC 5321 4.5.3.1.10 does for "552 Too many recipients".
	AlwaysTransient
	// AlwaysPermanent makes the reply permanent whatever its code. It never
	// applies to a reply without any code: garbage is never permanent.
	AlwaysPermanent
)

// Rule maps replies to a classification. Every condition that is set must
// hold; a rule with no condition matches every failure reply.
//
// Text conditions compare ASCII case-insensitively, with every run of white
// space (line breaks included) counted as one space, so "Receiving mail at
// a rate" matches a reply that breaks the line in the middle of it.
type Rule struct {
	// Name identifies the rule in Classification.Rule ("gmail-4.7.28").
	Name string

	// Code, when not 0, must equal the reply's basic code.
	Code int
	// Class, when not 0, must equal the reply's class (4 or 5): the basic
	// code's first digit, or the enhanced class when there is no basic code.
	Class int
	// Enhanced, when not zero, must equal the reply's enhanced code. A Class
	// of 0 in it matches either class, as the registry's "X.7.1" does.
	Enhanced EnhancedCode
	// EnhancedTo, when not zero, turns Enhanced into the inclusive range
	// Enhanced..EnhancedTo of details under Enhanced's class and subject
	// (Microsoft's 4.7.500 to 4.7.699).
	EnhancedTo EnhancedCode
	// Contains: every one of these must occur in the text.
	Contains []string
	// ContainsAny: when not empty, at least one of these must occur.
	ContainsAny []string

	// Category and Scope are the result. A zero Scope takes the category's
	// usual scope (see DefaultScope).
	Category Category
	Scope    Scope
	// Transient overrides the code's verdict when the rule says so.
	Transient Transience
	// RetryAfter is the wait the provider documents for this reply. A delay
	// the server states in the text ("try again in 92 seconds") wins over it.
	RetryAfter time.Duration
}

// Classifier classifies replies with a list of rules tried in order, then
// the enhanced code, then the basic code. It is immutable once built and
// safe for concurrent use. A nil or zero Classifier behaves as the default
// one (Classify).
type Classifier struct {
	rules []compiledRule
	// byEnh[enhStart[k]:enhStart[k+1]] are the rules indexed by enhanced
	// code key k (subject*1000+detail): two array reads, no hashing.
	enhStart []int32
	byEnh    []int32
	byCode   [600][]int32 // basic code → rules with a Code and no Enhanced
	// byCls: class → rules with only a Class, and the rules with no code
	// condition at all, in list order (merged once here, not per reply).
	byCls [6][]int32
	// needles holds every text condition once, for the one-pass search.
	needles needleIndex
}

type compiledRule struct {
	Rule
	all, any []int32 // needle ids in Classifier.needles
	// allMask and anyMask are the same ids as words of the found bit set:
	// once the text has been scanned, a rule's text conditions cost one or
	// two word tests (a rule's needles get neighbouring ids) instead of a
	// test per needle. masked is false when an id is past the bit set.
	allMask, anyMask []needleWord
	masked           bool
	// scanFirst: the rule has text conditions and no code condition but
	// its class. Such rules are tried on every failure reply of their
	// class that no rule before claimed, and there are many (the generic
	// text rules): by the first of them the reply is scanned for every
	// needle at once rather than searched for needle by needle.
	scanFirst bool
}

// needleWord is a set of needle ids that share one word of the bit set.
type needleWord struct {
	word int32
	bits uint64
}

func needleWords(ids []int32) []needleWord {
	var out []needleWord
	for _, id := range ids {
		w, bit := id>>6, uint64(1)<<(id&63)
		if k := len(out) - 1; k >= 0 && out[k].word == w {
			out[k].bits |= bit
			continue
		}
		out = append(out, needleWord{w, bit})
	}
	return out
}

// NewClassifier returns a classifier that tries rules, in order, before the
// built-in provider rules (DefaultRules) and the RFC 3463 and RFC 5321
// defaults. A rule with an empty Name is called "user-N", N its index.
func NewClassifier(rules ...Rule) *Classifier {
	all := make([]Rule, 0, len(rules)+len(defaultRules))
	for i, r := range rules {
		if r.Name == "" {
			r.Name = "user-" + strconv.Itoa(i)
		}
		all = append(all, r)
	}
	all = append(all, defaultRules...)
	return newClassifier(all)
}

// DefaultRules returns a copy of the built-in provider and text rules, in
// the order the default classifier tries them.
func DefaultRules() []Rule {
	out := make([]Rule, len(defaultRules))
	copy(out, defaultRules)
	for i := range out {
		out[i].Contains = append([]string(nil), out[i].Contains...)
		out[i].ContainsAny = append([]string(nil), out[i].ContainsAny...)
	}
	return out
}

func newClassifier(rules []Rule) *Classifier {
	c := &Classifier{}
	byEnh := map[uint16][]int32{}
	c.rules = make([]compiledRule, len(rules))
	ids := map[string]int32{}
	for i, r := range rules {
		cr := compiledRule{Rule: r}
		for _, s := range r.Contains {
			cr.all = append(cr.all, c.needles.id(normalize(nil, s), ids))
		}
		for _, s := range r.ContainsAny {
			cr.any = append(cr.any, c.needles.id(normalize(nil, s), ids))
		}
		cr.masked = !slices.ContainsFunc(cr.all, pastBitSet) && !slices.ContainsFunc(cr.any, pastBitSet)
		cr.allMask, cr.anyMask = needleWords(cr.all), needleWords(cr.any)
		cr.scanFirst = cr.masked && len(cr.all)+len(cr.any) > 0 && r.Code == 0 && r.Enhanced.IsZero()
		c.rules[i] = cr
		idx := int32(i)
		switch {
		case !r.Enhanced.IsZero() && r.Enhanced.Subject >= 0 && r.Enhanced.Subject < 8 &&
			r.Enhanced.Detail >= 0 && r.Enhanced.Detail < 1000:
			lo, hi := r.Enhanced.Detail, r.Enhanced.Detail
			if !r.EnhancedTo.IsZero() && r.EnhancedTo.Detail > lo {
				hi = min(r.EnhancedTo.Detail, 999)
			}
			for d := lo; d <= hi; d++ {
				k := enhKey(r.Enhanced.Subject, d)
				byEnh[k] = append(byEnh[k], idx)
			}
		case !r.Enhanced.IsZero():
			// An enhanced code no reply can carry: the rule never matches.
		case r.Code >= 200 && r.Code < 600:
			c.byCode[r.Code] = append(c.byCode[r.Code], idx)
		case r.Code != 0:
			// A basic code no reply can carry: the rule never matches.
		case r.Class >= 2 && r.Class <= 5:
			c.byCls[r.Class] = append(c.byCls[r.Class], idx)
		case r.Class != 0:
		default:
			for cls := 2; cls <= 5; cls++ {
				c.byCls[cls] = append(c.byCls[cls], idx)
			}
		}
	}
	c.enhStart = make([]int32, enhKeys+1)
	for k := range enhKeys {
		c.enhStart[k] = int32(len(c.byEnh))
		c.byEnh = append(c.byEnh, byEnh[uint16(k)]...)
	}
	c.enhStart[enhKeys] = int32(len(c.byEnh))
	c.needles.build()
	c.needles.rulesOf = make([][]int32, len(c.needles.needles))
	for i := range c.rules {
		c.needles.addRule(i, &c.rules[i])
	}
	return c
}

// hasAny reports whether the scanned text holds a needle of ws, or ws is
// empty (no ContainsAny condition).
func (ti *textIndex) hasAny(ws []needleWord) bool {
	for _, w := range ws {
		if ti.found[w.word]&w.bits != 0 {
			return true
		}
	}
	return len(ws) == 0
}

// ruledOut reports whether the scan showed that rule i cannot match. Once
// the text has been scanned, most rules fail on it: a bit test passes them
// without a call.
func (ti *textIndex) ruledOut(i int32) bool {
	return ti.scanned && i < maxSkippableRules && ti.live[i>>6]&(1<<(i&63)) == 0
}

func pastBitSet(id int32) bool { return id >= maxIndexedNeedles }

// enhKeys is the number of enhanced code keys: subjects 0-7, details 0-999.
const enhKeys = 8 * 1000

func enhKey(subject, detail int) uint16 { return uint16(subject*1000 + detail) }

var defaultClassifier = newClassifier(defaultRules)

// Classify classifies r with the default classifier: the built-in rules,
// then the enhanced code, then the basic code.
func Classify(r Reply) Classification { return defaultClassifier.Classify(r) }

// Rule names that callers may want to recognise.
const (
	// RuleSuccess: a 2xx or 3xx reply; not a failure at all.
	RuleSuccess = "rfc5321-success"
	// RuleMalformed: no basic and no enhanced code; always transient.
	RuleMalformed = "malformed"
	// RuleTooManyRecipients: "552 Too many recipients", transient by
	// RFC 5321 4.5.3.1.10 although 5xx.
	RuleTooManyRecipients = "rfc5321-552-too-many-recipients"
)

// Classify returns what r means for delivery. Positive replies (2xx, 3xx)
// are not transient, Category Other, Rule RuleSuccess. See the package
// documentation for the order of precedence.
func (c *Classifier) Classify(r Reply) Classification {
	if c == nil || c.enhStart == nil {
		c = defaultClassifier
	}
	class := r.class()
	switch class {
	case 2, 3:
		return Classification{Rule: RuleSuccess}
	case 4, 5:
	default:
		// No code, or one of no known class: nothing to go on, and a
		// classifier that bounced mail on garbage would lose mail.
		return Classification{Transient: true, Rule: RuleMalformed}
	}
	// The text is lower-cased and its white space collapsed only when a
	// rule first looks at it, on the stack unless it is long.
	var ti textIndex
	ti.raw = r.Text

	if i, ok := c.match(r, class, &ti); ok {
		cr := &c.rules[i]
		out := Classification{
			Transient: class == 4,
			Category:  cr.Category,
			Scope:     cr.Scope,
			Rule:      cr.Name,
		}
		switch cr.Transient {
		case AlwaysTransient:
			out.Transient = true
		case AlwaysPermanent:
			out.Transient = false
		}
		if out.Scope == ScopeUnknown {
			out.Scope = DefaultScope(out.Category)
		}
		if out.Transient {
			out.RetryAfter = ti.retryHint()
			if out.RetryAfter == 0 {
				out.RetryAfter = cr.RetryAfter
			}
		}
		return out
	}
	out := Classification{Transient: class == 4}
	if d, ok := enhancedDefault(r.Enhanced, class); ok {
		out.Category, out.Scope, out.Rule = d.category, d.scope, d.rule
	} else {
		d := basicDefault(r.Code, class)
		out.Category, out.Scope, out.Rule = d.category, d.scope, d.rule
	}
	if out.Scope == ScopeUnknown {
		out.Scope = DefaultScope(out.Category)
	}
	if out.Transient {
		out.RetryAfter = ti.retryHint()
	}
	return out
}

// match returns the index of the first rule, in list order, that matches.
// Only the rules indexed under the reply's enhanced code, basic code and
// class, and the rules with no code condition, are looked at.
func (c *Classifier) match(r Reply, class int, ti *textIndex) (int32, bool) {
	var lists [3][]int32
	n := 0
	if !r.Enhanced.IsZero() && r.Enhanced.Subject >= 0 && r.Enhanced.Subject < 8 &&
		r.Enhanced.Detail >= 0 && r.Enhanced.Detail < 1000 {
		k := enhKey(r.Enhanced.Subject, r.Enhanced.Detail)
		if l := c.byEnh[c.enhStart[k]:c.enhStart[k+1]]; len(l) > 0 {
			lists[n] = l
			n++
		}
	}
	if r.Code >= 200 && r.Code < 600 {
		if l := c.byCode[r.Code]; len(l) > 0 {
			lists[n] = l
			n++
		}
	}
	if l := c.byCls[class]; len(l) > 0 {
		lists[n] = l
		n++
	}
	// Merge the sorted lists so that rules run in their declared order;
	// a list is dropped when it runs out, and the last one left is walked
	// without comparisons.
	for n > 1 {
		best := 0
		for j := 1; j < n; j++ {
			if lists[j][0] < lists[best][0] {
				best = j
			}
		}
		i := lists[best][0]
		if !ti.ruledOut(i) && c.rules[i].matches(r, class, ti, &c.needles) {
			return i, true
		}
		if lists[best] = lists[best][1:]; len(lists[best]) == 0 {
			n--
			lists[best] = lists[n]
		}
	}
	if n == 1 {
		for _, i := range lists[0] {
			if ti.ruledOut(i) {
				continue
			}
			if c.rules[i].matches(r, class, ti, &c.needles) {
				return i, true
			}
		}
	}
	return 0, false
}

func (cr *compiledRule) matches(r Reply, class int, ti *textIndex, ix *needleIndex) bool {
	if cr.Code != 0 && cr.Code != r.Code {
		return false
	}
	if cr.Class != 0 && cr.Class != class {
		return false
	}
	if !cr.Enhanced.IsZero() {
		e := r.Enhanced
		if cr.Enhanced.Class != 0 && cr.Enhanced.Class != e.Class {
			return false
		}
		if cr.Enhanced.Subject != e.Subject {
			return false
		}
		hi := cr.Enhanced.Detail
		if !cr.EnhancedTo.IsZero() {
			hi = cr.EnhancedTo.Detail
		}
		if e.Detail < cr.Enhanced.Detail || e.Detail > hi {
			return false
		}
	}
	if len(cr.all) == 0 && len(cr.any) == 0 {
		return true
	}
	if cr.scanFirst && !ti.scanned {
		ti.scan(ix)
	}
	if ti.scanned && cr.masked {
		for _, w := range cr.allMask {
			if ti.found[w.word]&w.bits != w.bits {
				return false
			}
		}
		return ti.hasAny(cr.anyMask)
	}
	for _, id := range cr.all {
		if !ti.contains(ix, id) {
			return false
		}
	}
	if len(cr.any) == 0 {
		return true
	}
	for _, id := range cr.any {
		if ti.contains(ix, id) {
			return true
		}
	}
	return false
}

// DefaultScope is the scope a category has unless a rule says otherwise.
func DefaultScope(c Category) Scope {
	switch c {
	case Congestion, Reputation, TLS, System, Network:
		return ScopeConnection
	case RateLimit, Policy, Credentials, RelayDenied:
		return ScopeSession
	case Greylist, MailboxFull, UnknownUser, UnknownDomain:
		return ScopeRecipient
	case Spam, Authentication, MessageSize, Syntax:
		return ScopeMessage
	}
	return ScopeUnknown
}
