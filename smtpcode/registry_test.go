package smtpcode

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRegistryMatchesIANA checks the Go copy of the registry against the
// registry file beside the checkout: same codes, same names, same order.
func TestRegistryMatchesIANA(t *testing.T) {
	rows := readTSV(t, sharedFile(t, "enhanced_codes.tsv"))
	assert.Len(t, registry, len(rows))
	for i, row := range rows {
		if i >= len(registry) {
			break
		}
		assert.Equal(t, row["code"], registry[i].code, "row %d", i)
		assert.Equal(t, row["name"], registry[i].name, "code %s", row["code"])
		if registry[i].ref != "" {
			// The reference is taken from the source column ("ref RFC 3463; ...").
			assert.True(t, strings.Contains(row["source"], registry[i].ref), "ref of %s: %q not in %q", row["code"], registry[i].ref, row["source"])
		}
	}
}

func TestEnhancedCodeName(t *testing.T) {
	tests := []struct {
		code EnhancedCode
		want string
	}{
		{EnhancedCode{4, 4, 5}, "Mail system congestion"},
		{EnhancedCode{5, 1, 1}, "Bad destination mailbox address"},
		{EnhancedCode{5, 7, 26}, "Multiple authentication checks failed"},
		{EnhancedCode{4, 7, 650}, "Security or Policy Status"}, // Microsoft's own detail: the subject's name
		{EnhancedCode{5, 1, 351}, "Addressing Status"},
		{EnhancedCode{2, 0, 0}, "Other undefined Status"},
		{EnhancedCode{4, 9, 1}, "Persistent Transient Failure"}, // unknown subject: the class's name
		{EnhancedCode{5, 99, 1}, "Permanent Failure"},
		{EnhancedCode{3, 1, 1}, ""},
		{EnhancedCode{}, ""},
		{EnhancedCode{-1, -1, -1}, ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.code.Name(), tt.code.String())
	}
	// Every specific registry row resolves to its own name in both classes.
	for _, e := range registry {
		if strings.Count(e.code, "X") != 1 || !strings.HasPrefix(e.code, "X.") {
			continue
		}
		r, err := Parse("550 " + "5" + e.code[1:] + " x")
		if assert.NoError(t, err, e.code) {
			assert.Equal(t, e.name, r.Enhanced.Name(), e.code)
		}
	}
}
