package smtpcode

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The one-pass needle search must agree with bytes.Contains on every
// needle of the default rules, for texts that hold each needle at the
// start, in the middle, at the end, overlapping others, and for random
// texts built from the needles' own bytes.
func TestNeedleScanAgreesWithContains(t *testing.T) {
	ix := &defaultClassifier.needles
	require.NotEmpty(t, ix.needles)
	texts := []string{"", "a", "550 5.1.1 user unknown"}
	var all []string
	for _, n := range ix.needles {
		s := string(n)
		all = append(all, s)
		texts = append(texts, s, "x"+s, s+"y", "ab "+s+" cd", s[:len(s)/2], s+s)
	}
	texts = append(texts, strings.Join(all, ""), strings.Join(all, " "))
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := strings.Join(all, "") + "0123456789\x80\xff"
	for range 2000 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		texts = append(texts, string(b))
	}
	for _, txt := range texts {
		norm := normalize(nil, txt)
		var found [maxIndexedNeedles / 64]uint64
		ix.scan(norm, &found)
		for id, n := range ix.needles {
			want := bytes.Contains(norm, n)
			got := found[id>>6]&(1<<(id&63)) != 0
			if got != want {
				t.Fatalf("text %q, needle %q: scan says %v, bytes.Contains %v", norm, n, got, want)
			}
		}
	}
}

// Needles of one byte, or past the indexed bit set, are still found.
func TestNeedleScanShortAndManyNeedles(t *testing.T) {
	var rules []Rule
	for i := range maxIndexedNeedles + 10 {
		rules = append(rules, Rule{Name: "many", Code: 599, ContainsAny: []string{"needle" + strings.Repeat("z", i%7) + string(rune('a'+i%26)) + strings.Repeat("q", i/26)}})
	}
	rules = append(rules,
		Rule{Name: "one-byte", Code: 451, Contains: []string{"§"[:1], "q"}, Category: Spam},
		Rule{Name: "last", Code: 451, ContainsAny: []string{"far away needle"}, Category: Policy})
	c := NewClassifier(rules...)
	assert.Equal(t, "one-byte", c.Classify(MustParse("451 4.7.1 q \xc2")).Rule)
	assert.Equal(t, "last", c.Classify(MustParse("451 4.7.1 one two three four: far away needle")).Rule)
	assert.Equal(t, "rfc3463-x.7.1", c.Classify(MustParse("451 4.7.1 nothing here")).Rule)
}

func TestNeedleScanOneByteNeedles(t *testing.T) {
	c := NewClassifier(Rule{Code: 451, Contains: []string{"\xc2", "q"}}, Rule{Code: 451, ContainsAny: []string{""}})
	ix := &c.needles
	for _, txt := range []string{"", "q", "a \xc2", "abc", "xq\xc2"} {
		var found [maxIndexedNeedles / 64]uint64
		ix.scan([]byte(txt), &found)
		for id, n := range ix.needles {
			assert.Equal(t, bytes.Contains([]byte(txt), n), found[id>>6]&(1<<(id&63)) != 0, "%q in %q", n, txt)
		}
	}
}

func TestNextCodeStartAgreesWithByteLoop(t *testing.T) {
	naive := func(s string, from int) int {
		for i := from; i+4 <= len(s); i++ {
			if s[i] == ' ' && s[i+1] >= '2' && s[i+1] <= '5' {
				return i
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = " 0123456789ab\xa0\xb2\xb5-."
	for range 5000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := string(b)
		for from := 0; from <= len(s); from++ {
			require.Equal(t, naive(s, from), nextCodeStart(s, from), "%q from %d", s, from)
		}
	}
}

// normalizeText's eight-byte path must agree with the byte-by-byte rules:
// lower-case ASCII only, runs of white space as one space, no space at
// either end, and digitWord set when a word after the first starts with a
// digit.
func TestNormalizeTextAgreesWithByteLoop(t *testing.T) {
	reference := func(s string) (string, bool) {
		words := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' })
		digit := false
		for i, w := range words {
			b := []byte(w)
			for j := range b {
				b[j] = lowerTable[b[j]]
			}
			words[i] = string(b)
			digit = digit || i > 0 && isDigit(b[0])
		}
		return strings.Join(words, " "), digit
	}
	rng := rand.New(rand.NewPCG(5, 6))
	const alphabet = " \t\r\nAZaz@[`{09:/\x80\xc1\xdaQ\x01\x0b!"
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		wantText, wantDigit := reference(string(b))
		got, gotDigit := normalizeText(nil, string(b))
		require.Equal(t, wantText, string(got), "%q", b)
		require.Equal(t, wantDigit, gotDigit, "%q", b)
	}
}

// referenceRule is the rule-matching semantics without any index: the
// first rule, in order, whose conditions all hold, each text condition
// found with bytes.Contains in the normalized text. ok is false when no
// rule applies (success, malformed, or the defaults decide).
func referenceRule(rules []Rule, r Reply) (name string, ok bool) {
	class := r.class()
	if class != 4 && class != 5 {
		return "", false
	}
	text := normalize(nil, r.Text)
	has := func(s string) bool { return bytes.Contains(text, normalize(nil, s)) }
	for _, rule := range rules {
		if rule.Code != 0 && rule.Code != r.Code || rule.Class != 0 && rule.Class != class {
			continue
		}
		if !rule.Enhanced.IsZero() {
			e, hi := r.Enhanced, rule.Enhanced.Detail
			if !rule.EnhancedTo.IsZero() && rule.EnhancedTo.Detail > hi {
				hi = rule.EnhancedTo.Detail
			}
			if rule.Enhanced.Class != 0 && rule.Enhanced.Class != e.Class || rule.Enhanced.Subject != e.Subject ||
				e.Detail < rule.Enhanced.Detail || e.Detail > hi {
				continue
			}
		}
		all := true
		for _, s := range rule.Contains {
			all = all && has(s)
		}
		anyOK := len(rule.ContainsAny) == 0
		for _, s := range rule.ContainsAny {
			anyOK = anyOK || has(s)
		}
		if all && anyOK {
			return rule.Name, true
		}
	}
	return "", false
}

// The indexed classifier (rule lists by code, direct searches, then the
// one-pass scan that rules out rules) decides exactly as the rules read in
// order do, on every labelled reply and on each reply with its text
// repeated (long texts take the scan path early).
func TestClassifyAgreesWithRulesInOrder(t *testing.T) {
	raws := append([]string{benchOneLine, benchSixLine, benchFallback}, fuzzSeeds...)
	for _, row := range loadLabelled(t, "testdata/replies_extra.tsv") {
		raws = append(raws, row.raw)
	}
	if path := filepath.Join(sharedDir, "testdata", "replies.tsv"); fileExists(path) {
		for _, row := range loadLabelled(t, path) {
			raws = append(raws, row.raw)
		}
	}
	ruleNames := map[string]bool{}
	for _, rule := range defaultRules {
		ruleNames[rule.Name] = true
	}
	checked := 0
	for _, raw := range raws {
		r, err := Parse(raw)
		if err != nil {
			continue
		}
		for _, rr := range []Reply{r, {Code: r.Code, Enhanced: r.Enhanced, Text: r.Text + " " + r.Text}} {
			got := Classify(rr)
			if want, ok := referenceRule(defaultRules, rr); ok {
				assert.Equal(t, want, got.Rule, "%q", rr.Text)
				checked++
			} else {
				assert.False(t, ruleNames[got.Rule], "%q: %s claimed it, no rule in order does", rr.Text, got.Rule)
			}
		}
	}
	t.Logf("%d replies decided by a rule, all as the rules in order say", checked)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Replies built by hand may carry codes Parse never returns: no index may
// go out of range on them.
func TestClassifyOutOfRangeCodes(t *testing.T) {
	for _, e := range []EnhancedCode{{4, 7, -1}, {5, 1, 1000}, {4, -1, 1}, {5, 8, 1}, {4, 7, 65535}, {5, 7, -65536}} {
		for _, code := range []int{0, 450, 550, -1, 999} {
			c := Classify(Reply{Code: code, Enhanced: e, Text: "too many connections"})
			assert.NotEmpty(t, c.Rule, "%d %v", code, e)
		}
	}
}

// scanAgrees checks ix.scan against bytes.Contains, the reference, for
// every needle of ix on text t.
func scanAgrees(t *testing.T, ix *needleIndex, text []byte) {
	t.Helper()
	var found [maxIndexedNeedles / 64]uint64
	ix.scan(text, &found)
	for id, n := range ix.needles {
		if id >= maxIndexedNeedles {
			break
		}
		want := bytes.Contains(text, n)
		if got := found[id>>6]&(1<<(id&63)) != 0; got != want {
			t.Fatalf("text %q, needle %q: scan says %v, bytes.Contains %v", text, n, got, want)
		}
	}
}

// On every labelled reply, and on every prefix and suffix of it (needles
// at the very end, texts across the pass's 64-position blocks), the
// anchored scan finds exactly the needles bytes.Contains finds.
func TestNeedleScanAgreesOnLabelledReplies(t *testing.T) {
	raws := append([]string{benchOneLine, benchSixLine, benchFallback}, fuzzSeeds...)
	for _, row := range loadLabelled(t, "testdata/replies_extra.tsv") {
		raws = append(raws, row.raw)
	}
	if path := filepath.Join(sharedDir, "testdata", "replies.tsv"); fileExists(path) {
		for _, row := range loadLabelled(t, path) {
			raws = append(raws, row.raw)
		}
	}
	ix := &defaultClassifier.needles
	for _, raw := range raws {
		r, _ := Parse(raw)
		text := normalize(nil, r.Text)
		scanAgrees(t, ix, normalize(nil, r.Text+" "+r.Text))
		for i := range text {
			scanAgrees(t, ix, text[:i])
			if i < 70 {
				scanAgrees(t, ix, text[i:])
			}
		}
	}
}

// Every needle of the default rules, at every offset from 0 to past two
// blocks, at the end of the text or followed by more: found, and nothing
// else that bytes.Contains would not find.
func TestNeedleScanEveryOffset(t *testing.T) {
	ix := &defaultClassifier.needles
	filler := strings.Repeat("the quick brown fox ", 8)
	for _, n := range ix.needles {
		for off := 0; off <= 140; off++ {
			text := []byte(filler[:off] + string(n))
			scanAgrees(t, ix, text)
			scanAgrees(t, ix, append(text, " x"...))
		}
	}
}

// Random needles over a small alphabet share anchors, words and hash keys
// far more than real ones do; three-byte needles, which own whole words of
// the anchor set, mix with longer ones. The scan must still agree with
// bytes.Contains, and the classifier with the rules read in order.
func TestNeedleScanRandomClassifiers(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const alphabet = "ab c-"
	word := func(min, max int) string {
		b := make([]byte, min+rng.IntN(max-min+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 200 {
		var rules []Rule
		for i := range 1 + rng.IntN(40) {
			r := Rule{Name: "r" + strconv.Itoa(i), Class: 4 + rng.IntN(2)}
			for range rng.IntN(3) {
				r.Contains = append(r.Contains, word(1, 9))
			}
			for range rng.IntN(4) {
				r.ContainsAny = append(r.ContainsAny, word(3, 9))
			}
			rules = append(rules, r)
		}
		c := NewClassifier(rules...)
		for range 50 {
			text := word(0, 150)
			scanAgrees(t, &c.needles, normalize(nil, text))
			r := Reply{Code: 450 + 100*rng.IntN(2), Enhanced: EnhancedCode{4, 7, 1}, Text: text}
			want, ok := referenceRule(append(append([]Rule(nil), rules...), defaultRules...), r)
			got := c.Classify(r)
			if ok {
				require.Equal(t, want, got.Rule, "%q", text)
			}
		}
	}
}

// The eight-byte lowering carries "a space came before" from one word to
// the next: texts of many words, with spaces, digits and white space at
// every position, must normalize as the byte loop says.
func TestNormalizeTextLongAgreesWithFields(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const alphabet = "  aZ09\t\n\x80."
	for range 20000 {
		b := make([]byte, rng.IntN(120))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		words := strings.FieldsFunc(string(b), func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' })
		wantDigit := false
		for i, w := range words {
			lw := []byte(w)
			for j, c := range lw {
				lw[j] = lowerTable[c]
			}
			words[i] = string(lw)
			wantDigit = wantDigit || i > 0 && isDigit(w[0])
		}
		got, gotDigit := normalizeText(nil, string(b))
		require.Equal(t, strings.Join(words, " "), string(got), "%q", b)
		require.Equal(t, wantDigit, gotDigit, "%q", b)
	}
}

// The scan reads only even positions: a needle of five bytes or more is
// found through one of its two anchors, one of three or four at an odd
// position through the table of their first three bytes, and one of three
// that ends the text at an even position by the last check. Every default
// needle, in texts of every length from 0 to 140, at the start, at the
// end, or at both (so at both parities and across the 128-byte blocks).
func TestNeedleScanEveryLengthBothEnds(t *testing.T) {
	ix := &defaultClassifier.needles
	filler := strings.Repeat("zq xv ", 30)
	for _, n := range ix.needles {
		for size := 0; size <= 140; size++ {
			fill := filler[:max(size-len(n), 0)]
			for _, text := range []string{
				string(n) + fill,
				fill + string(n),
				string(n) + filler[:max(size-2*len(n), 0)] + string(n),
			} {
				scanAgrees(t, ix, []byte(text))
			}
		}
	}
}

// Needles of three to six bytes over a three-letter alphabet share their
// first three bytes (one run of the table of short needles), anchors and
// words; each is put at every offset of texts of every length up to 140,
// the rest of the text random over the same letters.
func TestNeedleScanShortNeedlesEveryOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const alphabet = "ab-"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	// One round of 12 needles at every offset of every length is ~1.5 s
	// (~10 s under -race); more rounds belong in a fuzz run, not in go test.
	rounds := 1
	if testing.Short() {
		rounds = 0
	}
	for range rounds {
		var rules []Rule
		var needles []string
		for i := range 12 {
			n := word(3 + i%4)
			needles = append(needles, n)
			rules = append(rules, Rule{Name: "r" + strconv.Itoa(i), Class: 5, ContainsAny: []string{n}})
		}
		c := NewClassifier(rules...)
		for _, n := range needles {
			for size := len(n); size <= 140; size++ {
				for off := 0; off+len(n) <= size; off++ {
					text := []byte(word(off) + n + word(size-off-len(n)))
					scanAgrees(t, &c.needles, text)
				}
			}
		}
	}
}

// A reply that reaches the rules with text conditions only is scanned at
// the first of them, without direct searches; one that a provider rule
// with a code condition claims at once is only searched directly.
func TestScanFirstAtTextOnlyRules(t *testing.T) {
	for _, tc := range []struct {
		raw          string
		wantScanned  bool
		wantSearches int
	}{
		{benchFallback, true, 0},
		{benchOneLine, false, 1},
		{benchSixLine, false, 0},
	} {
		r := MustParse(tc.raw)
		ti := textIndex{raw: r.Text}
		defaultClassifier.match(r, r.class(), &ti)
		assert.Equal(t, tc.wantScanned, ti.scanned, tc.raw)
		assert.Equal(t, tc.wantSearches, ti.searches, tc.raw)
	}
}
