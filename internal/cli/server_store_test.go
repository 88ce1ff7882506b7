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

// TestAdminDNSRecordOutsideZones: the CLI prints the server's refusal of a
// record outside the MagicDNS domain (here --domain) and every zone.
func TestAdminDNSRecordOutsideZones(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir, "--domain", "mesh.example.net")
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	adm := []string{"admin", "--server", ts.url, "--api-key", key, "dns", "records", "add"}
	code, out, errb := cmd(t, append(adm, "stray.example.org", "A", "198.18.0.9")...)
	if code != 1 || out != "" || strings.Count(errb, "\n") != 1 ||
		!strings.HasPrefix(errb, "warren admin dns records add: stray.example.org is outside the MagicDNS domain mesh.example.net and every custom zone (none)") {
		t.Fatalf("stray record: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	ok(t, append(adm, "db.mesh.example.net", "A", "198.18.0.9")...)
}
