package cli

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `warren version` names the version, the commit and build
// date given at build time and the Go version; --json carries the same;
// anything else is a one-line usage error.
func TestVersion(t *testing.T) {
	defer func(v, c, d string) { Version, Commit, BuildDate = v, c, d }(Version, Commit, BuildDate)
	Version, Commit, BuildDate = "v1.2.3-dirty", "0123abc", "2026-12-06T20:00:00Z"
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"warren v1.2.3-dirty\n", "commit  0123abc (modified)", "built   2026-12-06T20:00:00Z", runtime.Version()} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"version", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errb.String())
	}
	var v versionInfo
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if v.Version != "v1.2.3-dirty" || v.Commit != "0123abc" || !v.Modified || v.BuildDate != "2026-12-06T20:00:00Z" || v.Go != runtime.Version() {
		t.Errorf("--json: %+v", v)
	}
	errb.Reset()
	if code := run([]string{"version", "--bogus"}, &out, &errb); code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "unknown flag: --bogus") {
		t.Errorf("bad argument: exit %d, stderr %q", code, errb.String())
	}
}
