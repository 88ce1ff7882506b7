package cli

import (
	"bytes"
	"encoding/json"
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

// TestParseBundle: the daemon's text bundle (its layout as
// daemon.writeBundle writes it) becomes one JSON object: header fields,
// JSON sections as JSON, text sections as strings, log lines as a list.
func TestParseBundle(t *testing.T) {
	text := "warren debug bundle\ntime: 2026-12-06T21:00:00Z\ngo: go1.26.8 linux/amd64\n" +
		"\n===== status =====\n{\n  \"backendState\": \"Running\"\n}" +
		"\n===== prefs =====\n{\n  \"acceptDNS\": true\n}" +
		"\n===== netmap (keys redacted) =====\n(none)" +
		"\n===== metrics =====\n# HELP warren_up 1\nwarren_up 1\n" +
		"\n===== logs (last 2 lines) =====\ntime=1 level=INFO msg=\"daemon started\"\ntime=2 level=INFO msg=b\n"
	b := parseBundle(text)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Header   map[string]string
		Sections struct {
			Status  struct{ BackendState string }
			Prefs   map[string]bool
			Netmap  string
			Metrics string
		}
		Logs []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Header["time"] != "2026-12-06T21:00:00Z" || got.Header["go"] != "go1.26.8 linux/amd64" || got.Sections.Status.BackendState != "Running" ||
		!got.Sections.Prefs["acceptDNS"] || got.Sections.Netmap != "(none)" || got.Sections.Metrics != "# HELP warren_up 1\nwarren_up 1" ||
		len(got.Logs) != 2 || got.Logs[0] != `time=1 level=INFO msg="daemon started"` || b.Other != "" {
		t.Errorf("parsed %s", out)
	}
}
