// Package unitcaps reads the capability bounding set of one of the
// packaged systemd units (packaging/systemd), so tests run a process with
// exactly what its unit allows.
package unitcaps

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Setpriv returns the CapabilityBoundingSet of the unit file named unit in
// packaging/systemd, as setpriv(1) takes it ("+net_admin,+net_raw").
func Setpriv(t testing.TB, unit string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "..", "packaging", "systemd", unit)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			var caps []string
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
			return strings.Join(caps, ",")
		}
	}
	t.Fatalf("%s has no CapabilityBoundingSet", unit)
	return ""
}
