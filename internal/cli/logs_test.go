package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestServiceLogFormatAndLevel runs `warren server` (this test binary as
// the warren binary) with --log-format json at two levels: every stderr
// line is a JSON object with time, level and msg; at info the startup and
// shutdown lines are there, at warn they are filtered out while a warning
// (a request for a host name the server does not serve) still is.
func TestServiceLogFormatAndLevel(t *testing.T) {
	bin := filepath.Join(strings.SplitN(warrenOnPath(t), ":", 2)[0], "warren")
	for _, level := range []string{"info", "warn"} {
		t.Run(level, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			cmd := exec.Command(bin, "server", "--data-dir", t.TempDir(), "--listen", addr, "--log-format", "json", "--log-level", level)
			stderr := &lockedBuffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			wait.Until(t, "the server answers /healthz", func() bool {
				resp, err := http.Get("http://" + addr + "/healthz")
				if err == nil {
					resp.Body.Close()
				}
				return err == nil && resp.StatusCode == http.StatusOK
			})
			if code, _ := get(t, "http://"+addr+"/healthz", "evil.example"); code == http.StatusOK {
				t.Fatal("a foreign Host was served")
			}
			wait.Until(t, "the refused request logged", func() bool { return strings.Contains(stderr.String(), "refused request") })
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("server: %v\n%s", err, stderr.String())
			}
			levels := map[string]bool{}
			msgs := map[string]bool{}
			for line := range strings.SplitSeq(strings.TrimSpace(stderr.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not a JSON line: %q (%v)", line, err)
				}
				lv, _ := rec["level"].(string)
				msg, _ := rec["msg"].(string)
				if _, ok := rec["time"].(string); !ok || lv == "" || msg == "" || rec["component"] != "server" {
					t.Errorf("incomplete record: %q", line)
				}
				levels[lv], msgs[msg] = true, true
			}
			if !msgs["http: refused request"] || !levels["WARN"] {
				t.Errorf("no warning logged: %s", stderr.String())
			}
			if (level == "info") != (msgs["listening"] && msgs["shutting down"] && levels["INFO"]) {
				t.Errorf("--log-level %s: info records %v:\n%s", level, levels["INFO"], stderr.String())
			}
			if levels["DEBUG"] {
				t.Errorf("debug records at --log-level %s", level)
			}
		})
	}
}

// TestLogOptions: the levels and formats accepted, and what each writes.
func TestLogOptions(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		debug, info   bool
	}{
		{"debug", "text", true, true}, {"info", "json", false, true}, {"WARN", "json", false, false}, {"error", "text", false, false}, {"", "", false, true},
	} {
		var b bytes.Buffer
		l, err := (&logOptions{tc.level, tc.format}).logger(&b)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		l.Debug("d")
		l.Info("i")
		l.Error("e", "k", "v w")
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if want := 1 + btoi(tc.debug) + btoi(tc.info); len(lines) != want {
			t.Errorf("%+v: %d lines, want %d: %q", tc, len(lines), want, lines)
		}
		last := lines[len(lines)-1]
		if tc.format == "json" {
			var rec struct{ Level, Msg, K string }
			if err := json.Unmarshal([]byte(last), &rec); err != nil || rec.Level != "ERROR" || rec.Msg != "e" || rec.K != "v w" {
				t.Errorf("%+v: %q %v", tc, last, err)
			}
		} else if rec := parseLogfmt(last); rec["level"] != "ERROR" || rec["msg"] != "e" || rec["k"] != "v w" {
			t.Errorf("%+v: %q", tc, last)
		}
	}
	for _, bad := range []logOptions{{"loud", "text"}, {"info", "xml"}, {"verbose", "text"}} {
		if _, err := bad.logger(io.Discard); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
