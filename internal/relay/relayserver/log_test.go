package relayserver

import (
	"log/slog"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestLogLevels: each side logs its events at their own level with the
// node and relay as attributes: the relay a session coming and going at
// info; the client a refusal (not vouched) at warning, a plain failure to
// reach the relay at info, a session up at debug.
func TestLogLevels(t *testing.T) {
	var ks keySet
	a, stranger := genKey(t), genKey(t)
	ks.add(a)
	srvLog, srvRec := logtest.New()
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, Logger: srvLog})

	cliLog, cliRec := logtest.New()
	r.client(a, relay.ClientOptions{Logger: cliLog})
	wait.Until(t, "the client logs its session at debug level", func() bool {
		rec, ok := cliRec.Find("relay: connected")
		return ok && rec.Level == slog.LevelDebug && rec.Attrs["url"] == r.url
	})
	wait.Until(t, "relay logs the session", func() bool {
		rec, ok := srvRec.Find("relay: node connected")
		return ok && rec.Level == slog.LevelInfo && rec.Attrs["node"] == a.PublicKey().String() && rec.Attrs["from"] != ""
	})

	refusedLog, refusedRec := logtest.New()
	rc := relay.NewClient(r.url, pubkey.Relay{PublicKey: r.key.PublicKey()}, stranger,
		relay.ClientOptions{Logger: refusedLog, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	t.Cleanup(func() { rc.Close() })
	wait.Until(t, "the refusal logged at warning level", func() bool {
		rec, ok := refusedRec.Find("relay: session failed")
		return ok && rec.Level == slog.LevelWarn && rec.Attrs["url"] == r.url && rec.Attrs["err"] != ""
	})

	r.stop()
	wait.Until(t, "relay logs the end of the session", func() bool {
		rec, ok := srvRec.Find("relay: node disconnected")
		return ok && rec.Level == slog.LevelInfo && rec.Attrs["node"] == a.PublicKey().String()
	})
	wait.Until(t, "a relay gone logged at info level", func() bool {
		for _, rec := range cliRec.Records() {
			if rec.Msg == "relay: session failed; retrying" && rec.Level == slog.LevelInfo {
				return true
			}
		}
		return false
	})
}
