package smtpcode

import (
	"bytes"
	mathbits "math/bits"
	"strings"
)

// needleIndex finds, in one pass over a normalized text, every text
// condition (needle) of a classifier that occurs in it. A reply that no
// provider rule claims meets the generic MTA rules and their ~250 needles;
// searching for each in turn costs microseconds, one pass costs about as
// much as reading the text twice.
//
// Each needle is anchored on one of its trigrams, the one least likely to
// appear in mail text. The pass hashes every trigram of the text, tests
// the hash in a bit set of anchors, and only compares a needle with the
// text where its anchor's hash occurs: a few positions per reply.
type needleIndex struct {
	needles [][]byte // by id, normalized
	// anchors has a bit per trigram hash that anchors a needle: 2 KiB that
	// stay in cache, so most text positions cost one bit test.
	anchors [anchorKeys / 64]uint64
	// starts[k]..starts[k+1] is the run of entries anchored on hash k
	// (uint16 is enough: at most maxIndexedNeedles entries).
	starts  []uint16
	entries []anchoredNeedle
	// short lists needles under three bytes, which have no trigram; they
	// are searched for directly.
	short []int32

	// rulesOf lists, by needle id, the rules (under maxSkippableRules) that
	// use it; skippable marks the rules whose text conditions are all
	// indexed needles. After a scan, a skippable rule none of whose needles
	// occurs cannot match, and the rule loop passes it with one bit test.
	rulesOf   [][]int32
	skippable [maxSkippableRules / 64]uint64
}

// maxSkippableRules bounds the rules the scan can rule out at once (a bit
// set on the stack); later rules are tested one by one.
const maxSkippableRules = 512

// addRule records rule i's needles for skipping it after a scan.
func (ix *needleIndex) addRule(i int, cr *compiledRule) {
	if i >= maxSkippableRules || !cr.masked || len(cr.all)+len(cr.any) == 0 {
		return
	}
	ix.skippable[i>>6] |= 1 << (i & 63)
	for _, ids := range [2][]int32{cr.all, cr.any} {
		for _, id := range ids {
			ix.rulesOf[id] = append(ix.rulesOf[id], int32(i))
		}
	}
}

// live sets in live the rules that may still match once found is known:
// every rule that is not skippable, and the skippable rules that use a
// needle that was found.
func (ix *needleIndex) live(found *[maxIndexedNeedles / 64]uint64, live *[maxSkippableRules / 64]uint64) {
	for w := range live {
		live[w] = ^ix.skippable[w]
	}
	for w, bits := range found {
		for bits != 0 {
			id := w*64 + mathbits.TrailingZeros64(bits)
			bits &= bits - 1
			for _, i := range ix.rulesOf[id] {
				live[i>>6] |= 1 << (i & 63)
			}
		}
	}
}

const anchorKeys = 1 << 14

type anchoredNeedle struct {
	id     int32
	offset int32 // where the anchor trigram starts inside the needle
}

// maxIndexedNeedles bounds the needles whose presence the pass records (the
// bit set lives on the stack). Needles past it, only in classifiers with
// very many user rules, are searched for directly.
const maxIndexedNeedles = 1024

// byteClass folds a byte into 6 bits for the anchor hash: letters, digits,
// space and the punctuation rules use each get a class of their own; every
// other byte shares class 0. A shared class only costs a comparison that
// fails: the needle is always compared byte by byte.
var byteClass = func() (t [256]uint8) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 #()-.,'[]:;/_@!?<>=+&*%\"$"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = uint8(i + 1)
	}
	return t
}()

// trigramKey hashes the classes of three bytes, rolled into 18 bits, down
// to an anchor key.
func trigramKey(rolled uint32) uint {
	return uint((rolled&(1<<18-1))*0x9E3779B1>>(32-14)) & (anchorKeys - 1)
}

func trigramOf(a, b, c byte) uint32 {
	return uint32(byteClass[a])<<12 | uint32(byteClass[b])<<6 | uint32(byteClass[c])
}

// byteRank: 0 for rare bytes (punctuation such as '[' or '#'), up to 27
// for 'e' and the space. Digits rank in between: replies carry queue ids
// and addresses full of them.
func byteRank(c byte) int {
	const byFrequency = "zqxjkvbpygfwmucldrhsnioate " // rarest first
	if i := strings.IndexByte(byFrequency, c); i >= 0 {
		return i + 1
	}
	if isDigit(c) {
		return 10
	}
	return 0
}

// id returns the id of needle s (normalized), adding it when new.
func (ix *needleIndex) id(s []byte, ids map[string]int32) int32 {
	if id, ok := ids[string(s)]; ok {
		return id
	}
	id := int32(len(ix.needles))
	ids[string(s)] = id
	ix.needles = append(ix.needles, s)
	return id
}

// build fills the anchor table once every needle has an id.
func (ix *needleIndex) build() {
	load := make([]int, anchorKeys) // needles already anchored per key
	anchorOf := make([]int, len(ix.needles))
	offsetOf := make([]int, len(ix.needles))
	for id, n := range ix.needles {
		anchorOf[id] = -1
		if id >= maxIndexedNeedles {
			continue
		}
		if len(n) < 3 {
			ix.short = append(ix.short, int32(id))
			continue
		}
		best, bestScore := 0, 0
		for i := 0; i+2 < len(n); i++ {
			k := trigramKey(trigramOf(n[i], n[i+1], n[i+2]))
			// Spread needles over anchors too: one anchor shared by many
			// needles (say "000" in "rl000001") costs a comparison each.
			score := byteRank(n[i]) + byteRank(n[i+1]) + byteRank(n[i+2]) + 8*load[k]
			if i == 0 || score < bestScore {
				best, bestScore = i, score
			}
		}
		k := trigramKey(trigramOf(n[best], n[best+1], n[best+2]))
		load[k]++
		ix.anchors[k>>6] |= 1 << (k & 63)
		anchorOf[id], offsetOf[id] = int(k), best
	}
	ix.starts = make([]uint16, anchorKeys+1)
	for k := 0; k < anchorKeys; k++ {
		ix.starts[k+1] = ix.starts[k] + uint16(load[k])
	}
	ix.entries = make([]anchoredNeedle, ix.starts[anchorKeys])
	next := append([]uint16(nil), ix.starts[:anchorKeys]...)
	for id, k := range anchorOf {
		if k < 0 {
			continue
		}
		ix.entries[next[k]] = anchoredNeedle{id: int32(id), offset: int32(offsetOf[id])}
		next[k]++
	}
}

// scan sets in found the bit of every indexed needle that occurs in t.
func (ix *needleIndex) scan(t []byte, found *[maxIndexedNeedles / 64]uint64) {
	for _, id := range ix.short {
		if bytes.Contains(t, ix.needles[id]) {
			found[id>>6] |= 1 << (id & 63)
		}
	}
	if len(t) < 3 {
		return
	}
	rolled := uint32(byteClass[t[0]])<<6 | uint32(byteClass[t[1]])
	for i := 2; i < len(t); i++ {
		rolled = rolled<<6 | uint32(byteClass[t[i]])
		if k := trigramKey(rolled); ix.anchors[k>>6]&(1<<(k&63)) != 0 {
			ix.verify(t, i-2, k, found)
		}
	}
}

// verify compares with t the needles anchored on key k at t[i:].
func (ix *needleIndex) verify(t []byte, i int, k uint, found *[maxIndexedNeedles / 64]uint64) {
	for _, a := range ix.entries[ix.starts[k]:ix.starts[k+1]] {
		p := i - int(a.offset)
		n := ix.needles[a.id]
		// The first byte rules out most hash collisions without a call.
		if p >= 0 && p+len(n) <= len(t) && t[p] == n[0] && bytes.Equal(t[p:p+len(n)], n) {
			found[a.id>>6] |= 1 << (a.id & 63)
		}
	}
}
