package smtpcode

import (
	"bytes"
	"encoding/binary"
	mathbits "math/bits"
	"strings"
)

// needleIndex finds, in one pass over a normalized text, every text
// condition (needle) of a classifier that occurs in it. A reply that no
// provider rule claims meets the generic MTA rules and their ~290 needles;
// searching for each in turn costs microseconds, one pass costs about as
// much as reading the text twice.
//
// Each needle is anchored on four of its bytes (all three of a needle of
// three), those least likely to appear in mail text. The pass reads the
// text four bytes at a time, looks the four up in a bit set of anchors,
// and only compares a needle with the text where its anchor occurs: a few
// positions per reply. (Anchors of three bytes met text too often: "ing"
// or "acc" occur in most replies.)
//
// One lookup serves both lengths: the first three bytes choose a word of
// the bit set and the fourth a bit in it, so a three-byte anchor is a word
// with every bit set.
//
// The pass reads only every other position (the even ones), so a needle
// of five bytes or more has two anchors side by side: wherever it occurs,
// one of them starts at an even position. A needle of three or four bytes
// at an odd position p+1 is found from the even position p through its
// first three bytes, the last three of the four read at p, looked up in a
// second, smaller table (odd).
type needleIndex struct {
	needles [][]byte // by id, normalized
	// anchors has a bit per anchor key, so most text positions cost one
	// bit test in a table that stays in cache.
	anchors [anchorWords]uint64
	// starts[w]..starts[w+1] is the run of entries whose key lies in word
	// w of anchors (uint16 is enough: at most maxIndexedNeedles entries);
	// a word holds one or two anchors, so a run is short.
	starts  [anchorWords + 1]uint16
	entries []anchoredNeedle
	// text holds every indexed needle, back to back, for entries to slice.
	text []byte
	// odd marks the keys (oddKey) of the first three bytes of the needles
	// of three and four bytes; oddStarts and oddEntries group them as
	// starts and entries do.
	odd        [oddKeys]uint8
	oddStarts  [oddKeys + 1]uint16
	oddEntries []anchoredNeedle
	// short lists needles under three bytes, which have no anchor; they
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

// anchorWords is the number of words of anchor bits: with the default
// needles (two anchors each for most) about one bit in two hundred is set,
// a third of them by the three-byte needles' whole words.
const (
	anchorWordBits = 11
	anchorWords    = 1 << anchorWordBits
)

type anchoredNeedle struct {
	gram       uint32 // the anchor's bytes, little-endian
	mask       uint32 // the bytes of gram that count: three or four
	id         int32
	offset     int32 // where the anchor starts inside the needle
	start, end int32 // the needle in needleIndex.text
}

// maxIndexedNeedles bounds the needles whose presence the pass records (the
// bit set lives on the stack). Needles past it, only in classifiers with
// very many user rules, are searched for directly.
const maxIndexedNeedles = 1024

// oddKeys is the number of keys of the table of needles of three and four
// bytes (few: ten among the default rules).
const (
	oddKeyBits = 10
	oddKeys    = 1 << oddKeyBits
)

// oddKey hashes three bytes (w's fourth must be 0) to a key of odd.
func oddKey(w uint32) uint { return uint(w*0x9E3779B1) >> (32 - oddKeyBits) }

const mask24 = 1<<24 - 1

// anchorWord hashes the first three bytes of w (four text bytes read
// little-endian) to a word of the anchor bit set.
func anchorWord(w uint32) uint {
	return uint((w&mask24)*0x9E3779B1) >> (32 - anchorWordBits)
}

// anchorKey is the key of the four bytes w: their word, and a bit in it
// that the fourth byte chooses.
func anchorKey(w uint32) uint { return anchorWord(w)<<6 | uint(w>>24&63) }

// load32 reads b[i:i+4] little-endian. Reading the four bytes as one word
// keeps text positions independent of each other, so that the processor
// works on several at once.
func load32(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[i : i+4]) }

// load24 reads three bytes as load32 reads four, the fourth taken as 0:
// the last text position holds a three-byte anchor but no four-byte one.
func load24(b []byte, i int) uint32 {
	b = b[i : i+3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
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
	// Four bytes that several needles share come from words replies use
	// often ("recipient", "account"): poor anchors.
	shared := map[uint32]int{}
	for id, n := range ix.needles {
		if id >= maxIndexedNeedles {
			break
		}
		seen := map[uint32]bool{}
		for i := 0; i+3 < len(n); i++ {
			if g := load32(n, i); !seen[g] {
				seen[g] = true
				shared[g]++
			}
		}
	}
	load := make([]int, 64*anchorWords) // needles already anchored per key
	score := func(n []byte, i int) int {
		g := load32(n, i)
		// Spread needles over keys too: one key shared by many needles
		// ("l000" in "rl000001") costs a comparison each.
		return byteRank(n[i]) + byteRank(n[i+1]) + byteRank(n[i+2]) + byteRank(n[i+3]) +
			8*load[anchorKey(g)] + 32*(shared[g]-1)
	}
	var anchored, odd []anchoredNeedle
	for id, n := range ix.needles {
		if id >= maxIndexedNeedles {
			break
		}
		a := anchoredNeedle{id: int32(id), start: int32(len(ix.text)), end: int32(len(ix.text) + len(n))}
		switch {
		case len(n) < 3:
			ix.short = append(ix.short, int32(id))
			continue
		case len(n) == 3:
			// Whatever byte follows: every bit of the word.
			a.gram, a.mask = load24(n, 0), mask24
			ix.anchors[anchorWord(a.gram)] = ^uint64(0)
			anchored = append(anchored, a)
		case len(n) == 4:
			a.gram, a.mask = load32(n, 0), ^uint32(0)
			k := anchorKey(a.gram)
			load[k]++
			ix.anchors[k>>6] |= 1 << (k & 63)
			anchored = append(anchored, a)
		default:
			// Two anchors side by side, at best and best+1.
			best, bestScore := 0, 0
			for i := 0; i+4 < len(n); i++ {
				if sc := score(n, i) + score(n, i+1); i == 0 || sc < bestScore {
					best, bestScore = i, sc
				}
			}
			for i := best; i <= best+1; i++ {
				a.gram, a.mask, a.offset = load32(n, i), ^uint32(0), int32(i)
				k := anchorKey(a.gram)
				load[k]++
				ix.anchors[k>>6] |= 1 << (k & 63)
				anchored = append(anchored, a)
			}
		}
		if len(n) <= 4 {
			// At an odd position: its first three bytes, one position on
			// from an even one.
			a.gram, a.mask, a.offset = load24(n, 0), mask24, 0
			ix.odd[oddKey(a.gram)] = 1
			odd = append(odd, a)
		}
		ix.text = append(ix.text, n...)
	}
	ix.entries = groupEntries(anchored, ix.starts[:], func(a anchoredNeedle) uint { return anchorWord(a.gram) })
	ix.oddEntries = groupEntries(odd, ix.oddStarts[:], func(a anchoredNeedle) uint { return oddKey(a.gram) })
}

// groupEntries returns entries ordered by key and sets starts[k] to where
// the run of key k begins (starts[k+1] where it ends).
func groupEntries(entries []anchoredNeedle, starts []uint16, key func(anchoredNeedle) uint) []anchoredNeedle {
	for _, a := range entries {
		starts[key(a)+1]++
	}
	for k := 1; k < len(starts); k++ {
		starts[k] += starts[k-1]
	}
	out := make([]anchoredNeedle, len(entries))
	next := append([]uint16(nil), starts...)
	for _, a := range entries {
		k := key(a)
		out[next[k]] = a
		next[k]++
	}
	return out
}

// scan sets in found the bit of every indexed needle that occurs in t.
//
// Positions are tested 64 at a time into a word of hits, without a branch,
// and only then verified: a text position that meets an anchor is rare but
// unpredictable, and a branch per position would be mispredicted on each.
// Only even positions are read (see needleIndex): a hit at p stands for an
// anchor at p or a needle of three or four bytes at p+1.
func (ix *needleIndex) scan(t []byte, found *[maxIndexedNeedles / 64]uint64) {
	for _, id := range ix.short {
		if bytes.Contains(t, ix.needles[id]) {
			found[id>>6] |= 1 << (id & 63)
		}
	}
	anchors, odd := &ix.anchors, &ix.odd
	for base := 0; base+4 <= len(t); base += 128 {
		hits := evenHits(anchors, odd, t[base:min(base+128+2, len(t))])
		for hits != 0 {
			p := base + 2*mathbits.TrailingZeros64(hits)
			hits &= hits - 1
			w := load32(t, p)
			k := anchorWord(w)
			ix.verify(t, p, w, ix.entries[ix.starts[k]:ix.starts[k+1]], found)
			if k := oddKey(w >> 8); odd[k] != 0 {
				ix.verify(t, p+1, w>>8, ix.oddEntries[ix.oddStarts[k]:ix.oddStarts[k+1]], found)
			}
		}
	}
	if i := len(t) - 3; i >= 0 {
		// The last three bytes, for a needle of three at an even position
		// (one at an odd position is found from the position before).
		if w := load24(t, i); ix.has(anchorKey(w)) {
			k := anchorWord(w)
			ix.verify(t, i, w, ix.entries[ix.starts[k]:ix.starts[k+1]], found)
		}
	}
}

// evenHits tests the even positions of block (up to 64) that have four
// bytes: bit j of the result is set when position 2j meets an anchor, or
// position 2j+1 the first three bytes of a needle of three or four.
//
// A function of its own, too large to be inlined, so that the loop has
// the registers to itself: inlined into scan, its values were kept on the
// stack. It reads two positions per round.
func evenHits(anchors *[anchorWords]uint64, odd *[oddKeys]uint8, block []byte) uint64 {
	var hits uint64
	n := 0
	b := block
	for ; len(b) >= 6; b = b[4:] {
		w0, w1 := load32(b, 0), load32(b, 2)
		h0 := anchors[anchorWord(w0)]>>(w0>>24&63) | uint64(odd[oddKey(w0>>8)])
		h1 := anchors[anchorWord(w1)]>>(w1>>24&63) | uint64(odd[oddKey(w1>>8)])
		hits = hits>>2 | h0<<63>>1 | h1<<63
		n += 2
	}
	if len(b) >= 4 {
		w := load32(b, 0)
		hits = hits>>1 | (anchors[anchorWord(w)]>>(w>>24&63)|uint64(odd[oddKey(w>>8)]))<<63
		n++
	}
	return hits >> (64 - n)
}

// has reports whether key k anchors a needle.
func (ix *needleIndex) has(k uint) bool {
	return ix.anchors[k>>6&(anchorWords-1)]&(1<<(k&63)) != 0
}

// verify compares with t the needles of run whose anchor is the bytes w
// (their mask of them) at t[i:].
func (ix *needleIndex) verify(t []byte, i int, w uint32, run []anchoredNeedle, found *[maxIndexedNeedles / 64]uint64) {
	for _, a := range run {
		if w&a.mask != a.gram { // a hash collision
			continue
		}
		p := i - int(a.offset)
		if end := p + int(a.end-a.start); p >= 0 && end <= len(t) &&
			string(t[p:end]) == string(ix.text[a.start:a.end]) {
			found[a.id>>6] |= 1 << (a.id & 63)
		}
	}
}
