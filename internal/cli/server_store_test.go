package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerSubcommandsRefuseMissingStore: `warren server apikey` reads
// and writes an existing store; a data dir or database that does not
// exist (a typo) is refused in one line naming it, and nothing is created.
// Only `warren server` itself creates its data dir and database.
func TestServerSubcommandsRefuseMissingStore(t *testing.T) {
	base := t.TempDir()
	typo := filepath.Join(base, "typo")
	db := filepath.Join(base, "nope.db")
	for _, args := range [][]string{
		{"server", "apikey", "list", "--data-dir", typo},
		{"server", "apikey", "create", "--data-dir", typo},
		{"server", "apikey", "list", "--db", "sqlite:" + db},
		{"server", "apikey", "create", "--db", db},
	} {
		code, out, errb := cmd(t, args...)
		if code != 1 || out != "" || !strings.Contains(errb, "does not exist") || strings.Count(errb, "\n") != 1 ||
			!strings.Contains(errb, filepath.Base(args[len(args)-1])) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errb)
		}
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Fatalf("created %v", ents[0].Name())
	}
}
