package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/localapi"
)

// hostile is a name that clears the terminal and forges a line of output.
const hostile = "evil\x1b[2J\nlaptop  100.64.0.9  alice  online"

// checkEscaped: out has the expected number of lines, no escape or other
// control character but newlines, and shows the hostile name quoted.
func checkEscaped(t *testing.T, what, out string, lines int) {
	t.Helper()
	if n := strings.Count(out, "\n"); n != lines {
		t.Errorf("%s: %d lines, want %d:\n%s", what, n, lines, out)
	}
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r == 0x7f) {
			t.Errorf("%s: control character %q in output:\n%q", what, r, out)
			break
		}
	}
	if !strings.Contains(out, `"evil\x1b[2J\nlaptop  100.64.0.9  alice  online"`) {
		t.Errorf("%s: hostile name not shown escaped:\n%s", what, out)
	}
}

func TestNamesEscaped(t *testing.T) {
	var b bytes.Buffer
	now := time.Now()
	printNodes(&b, []admin.Node{
		{ID: 1, Name: "laptop", User: "alice", Hostname: "laptop.lan", Addresses: []string{"100.64.0.1"}},
		{ID: 2, Name: "evil", User: "mallory", Hostname: hostile, Addresses: []string{"100.64.0.2"}},
	})
	checkEscaped(t, "admin nodes list", b.String(), 3)
	if !strings.Contains(b.String(), " laptop.lan ") {
		t.Errorf("a plain host name is shown as is:\n%s", b.String())
	}

	b.Reset()
	printUsers(&b, []admin.User{{ID: 1, Name: hostile, Created: now}})
	checkEscaped(t, "admin users list", b.String(), 2)

	b.Reset()
	st := &localapi.Status{BackendState: localapi.StateRunning, Connected: true,
		Self:  &localapi.PeerStatus{Name: "laptop", User: "alice", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
		Peers: []localapi.PeerStatus{{Name: hostile, User: "bob\x1b]0;owned\a", Online: true, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.2")}}},
	}
	writeStatus(&b, st, now)
	checkEscaped(t, "status", b.String(), 2)
	if strings.Contains(b.String(), "owned\a") {
		t.Errorf("status: user name not escaped:\n%q", b.String())
	}
}
