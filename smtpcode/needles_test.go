package smtpcode

import (
	"bytes"
	"math/rand/v2"
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
