package smtpcode

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type labelledReply struct {
	raw       string
	code      string
	enhanced  string
	transient bool
	category  string
	source    string
}

func loadLabelled(t *testing.T, path string) []labelledReply {
	var out []labelledReply
	for _, row := range readTSV(t, path) {
		tr := row["transient"]
		require.Contains(t, []string{"yes", "no"}, tr, "transient column of %q", row["reply"])
		require.NotEmpty(t, row["source"], "every row needs a source: %q", row["reply"])
		out = append(out, labelledReply{
			raw:       strings.ReplaceAll(row["reply"], `\n`, "\n"),
			code:      row["basic_code"],
			enhanced:  row["enhanced_code"],
			transient: tr == "yes",
			category:  row["category"],
			source:    row["source"],
		})
	}
	return out
}

// checkLabelled parses and classifies every row: the transient flag must
// match on every row, the category on at least minCategory of them.
func checkLabelled(t *testing.T, rows []labelledReply, minCategory float64) {
	require.NotEmpty(t, rows)
	var transientOK, categoryOK int
	var mismatches []string
	for _, row := range rows {
		r, err := Parse(row.raw)
		require.NoError(t, err, "Parse(%q)", row.raw)
		wantCode := 0
		if row.code != "-" {
			wantCode, err = strconv.Atoi(row.code)
			require.NoError(t, err)
		}
		assert.Equal(t, wantCode, r.Code, "basic code of %q", row.raw)
		wantEnh := row.enhanced
		if wantEnh == "-" {
			wantEnh = ""
		}
		assert.Equal(t, wantEnh, r.Enhanced.String(), "enhanced code of %q", row.raw)

		c := Classify(r)
		if c.Transient == row.transient {
			transientOK++
		} else {
			mismatches = append(mismatches, "TRANSIENT want "+strconv.FormatBool(row.transient)+" got "+c.String()+": "+row.raw)
		}
		if c.Category.String() == row.category {
			categoryOK++
		} else {
			mismatches = append(mismatches, "CATEGORY want "+row.category+" got "+c.String()+": "+row.raw)
		}
	}
	n := float64(len(rows))
	tPct, cPct := 100*float64(transientOK)/n, 100*float64(categoryOK)/n
	t.Logf("%d rows: transient %d/%d (%.1f%%), category %d/%d (%.1f%%)",
		len(rows), transientOK, len(rows), tPct, categoryOK, len(rows), cPct)
	if transientOK != len(rows) || cPct < 100*minCategory {
		t.Errorf("below the bar (transient 100%%, category %.0f%%); mismatches:\n%s",
			100*minCategory, strings.Join(mismatches, "\n"))
	} else if len(mismatches) > 0 {
		t.Logf("category mismatches (within the bar):\n%s", strings.Join(mismatches, "\n"))
	}
}

func TestSharedReplies(t *testing.T) {
	checkLabelled(t, loadLabelled(t, sharedFile(t, "replies.tsv")), 0.90)
}

// TestExtraReplies checks the project's own labelled rows (provider
// documentation and MTA sources, one source per row) with the same bar.
func TestExtraReplies(t *testing.T) {
	checkLabelled(t, loadLabelled(t, "testdata/replies_extra.tsv"), 0.90)
}
