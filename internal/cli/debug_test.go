package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestDebugUsageErrors checks the observability verbs' usage errors: exit
// code 2 (1 for an unreachable daemon) and a message naming the problem.
func TestDebugUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"debug"}, 2, "warren debug: missing verb (want capture, bundle)"},
		{[]string{"debug", "bogus"}, 2, `warren debug: unknown verb "bogus"`},
		{[]string{"debug", "capture", "a", "b"}, 2, "at most one peer"},
		{[]string{"debug", "capture", "-c", "-1"}, 2, "must not be negative"},
		{[]string{"debug", "bundle", "x"}, 2, `unexpected argument "x"`},
		{[]string{"metrics", "x"}, 2, `unexpected argument "x"`},
		{[]string{"metrics", "--socket", "/nonexistent/warrend.sock"}, 1, "is `warren daemon` running?"},
		{[]string{"debug", "capture", "--socket", "/nonexistent/warrend.sock"}, 1, "is `warren daemon` running?"},
		{[]string{"debug", "bundle", "--socket", "/nonexistent/warrend.sock"}, 1, "is `warren daemon` running?"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
}
