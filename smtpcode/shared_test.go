package smtpcode

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sharedDir is ../shared seen from the repository root. Tests that need it
// skip when it is absent (a user's clone) and fail under CI=true.
const sharedDir = "../../shared"

// readTSV reads a tab-separated file with a header line and returns the
// rows as maps from column name to value. rel is relative to sharedDir,
// unless shared is false (then it is relative to the package directory).
func readTSV(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var header []string
	var rows []map[string]string
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		if header == nil {
			header = cols
			continue
		}
		require.Len(t, cols, len(header), "%s: row %q", path, line)
		row := make(map[string]string, len(cols))
		for i, h := range header {
			row[h] = cols[i]
		}
		rows = append(rows, row)
	}
	require.NoError(t, sc.Err())
	return rows
}

// sharedFile returns the path of name under ../shared/testdata, skipping
// the test when it is absent unless CI=true.
func sharedFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(sharedDir, "testdata", name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing: %v", p, err)
		}
		t.Skipf("%s not found (it lives beside the checkout, not in it): %v", p, err)
	}
	return p
}
