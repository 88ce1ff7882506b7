package cli

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestServerLogLevelNotFromWords: `warren server` logs each event at the
// level its package gives it. A node named failed-disk logging out is
// info; the old adapter read "failed" in the line and logged an error.
func TestServerLogLevelNotFromWords(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir, "--expiration", "1h"))
	a := func(args ...string) string {
		t.Helper()
		return ok(t, append([]string{"admin", "--server", ts.url, "--api-key", key}, args...)...)
	}
	a("users", "create", "alice")
	authKey := strings.TrimSpace(a("authkeys", "create", "--user", "alice", "--expiration", "1h"))
	pub, err := noise.ParsePublicKey(ts.pub)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := noise.GeneratePrivateKey()
	cl, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: pub}, NodeKey: nk, Logger: logtest.T(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Register(ctx, authKey, "failed-disk", nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	var line string
	wait.Until(t, "the logout logged", func() bool {
		for l := range strings.SplitSeq(ts.stderr.String(), "\n") {
			if strings.Contains(l, `msg="control: node logged out"`) {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "name=failed-disk") || !strings.Contains(line, "component=server") {
		t.Fatalf("logout logged as %q", line)
	}
}

// logRecord finds the first text log line of output with message msg and
// returns its attributes (nil if there is none yet).
func logRecord(output, msg string) map[string]string {
	for line := range strings.SplitSeq(output, "\n") {
		rec := parseLogfmt(line)
		if rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

// parseLogfmt reads the key=value pairs slog's text handler writes (values
// with spaces or quotes are Go-quoted).
func parseLogfmt(line string) map[string]string {
	rec := map[string]string{}
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \"") {
			return rec
		}
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return rec
			}
			rec[k], _ = strconv.Unquote(q)
			line = rest[len(q):]
			continue
		}
		v, after, _ := strings.Cut(rest, " ")
		rec[k], line = v, after
	}
	return rec
}
