package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
)

// TestControlLogLevels: the control client's lines reach the daemon's
// logger at the levels the client gives them, not at one the daemon
// guesses from their words: a server gone away is info (the client
// reconnects), an expired node's refusal ends the stream with a warning
// from the daemon.
func TestControlLogLevels(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	td.up("node1")
	cs.Stop()
	waitFor(t, "the lost stream logged at info level", func() bool {
		for _, r := range td.log.Records() {
			if r.Msg == "control: map stream ended; reconnecting" {
				return r.Level == slog.LevelInfo && r.Attrs["err"] != "" && r.Attrs["in"] != ""
			}
		}
		return false
	})
	cs.Start()
	td.waitState(localapi.StateRunning)
	cs.SetExpiry(td.key(), time.Now().Add(-time.Minute))
	td.waitState(localapi.StateNeedsLogin)
	var warned bool
	for _, r := range td.log.Records() {
		if r.Level >= slog.LevelWarn && strings.Contains(r.Msg+" "+r.Attrs["err"], "expired") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("the refusal of the expired node is not a warning; logged:\n%s", td.log.Text())
	}
}
