package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/metrics"
)

// Log ring bounds: the bundle carries the last logRingLines lines, each cut
// at logLineMax bytes.
const (
	logRingLines = 2000
	logLineMax   = 2048
)

// logRing keeps the daemon's most recent log lines for `warren debug
// bundle`.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int // where the next line goes once full
}

// Write adds one formatted line (slog's text handler writes one record per
// call).
func (r *logRing) Write(b []byte) (int, error) {
	line := strings.TrimRight(string(b[:min(len(b), logLineMax)]), "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < logRingLines {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.next] = line
		r.next = (r.next + 1) % logRingLines
	}
	return len(b), nil
}

// snapshot returns the lines, oldest first.
func (r *logRing) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// wrap returns a logger that writes to base and keeps a copy of each line
// in the ring: every record base logs, and Info and above even when base
// is quieter.
func (r *logRing) wrap(base *slog.Logger) *slog.Logger {
	ring := slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(&teeHandler{base: base.Handler(), ring: ring})
}

type teeHandler struct {
	base, ring slog.Handler
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.base.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	var err error
	if h.base.Enabled(ctx, rec.Level) {
		err = h.base.Handle(ctx, rec.Clone())
	}
	h.ring.Handle(ctx, rec)
	return err
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &teeHandler{base: h.base.WithAttrs(as), ring: h.ring.WithAttrs(as)}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	return &teeHandler{base: h.base.WithGroup(name), ring: h.ring.WithGroup(name)}
}

// Redaction patterns: auth and API keys, and WireGuard-style keys (32
// bytes in base64) in the network map.
var (
	secretKeyRE = regexp.MustCompile(`\b(wkey|wapi)_[A-Za-z0-9_\-]+`)
	wgKeyRE     = regexp.MustCompile(`[A-Za-z0-9+/]{43}=`)
)

// redactKeys shortens every base64 key to its first 6 characters.
func redactKeys(b []byte) []byte {
	return wgKeyRE.ReplaceAllFunc(b, func(k []byte) []byte { return append(k[:6:6], "…[redacted]"...) })
}

// writeBundle writes the bug-report bundle: status, the network map with
// keys redacted, metrics and recent logs, as plain text sections. Whatever
// the sections hold, auth keys, API keys and the node's private key are
// scrubbed from the whole before it leaves the daemon.
func (d *Daemon) writeBundle(w io.Writer) error {
	var b bytes.Buffer
	section := func(name string) { fmt.Fprintf(&b, "\n===== %s =====\n", name) }
	fmt.Fprintf(&b, "warren debug bundle\ntime: %s\ngo: %s %s/%s\n", time.Now().UTC().Format(time.RFC3339), runtime.Version(), runtime.GOOS, runtime.GOARCH)

	d.mu.Lock()
	st := d.statusLocked()
	nm := d.nm
	prefs := d.prefs
	priv, privHex := d.key.Base64(), d.key.Hex()
	d.mu.Unlock()

	section("status")
	js, _ := json.MarshalIndent(st, "", "  ")
	b.Write(js)
	section("prefs")
	js, _ = json.MarshalIndent(prefs, "", "  ")
	b.Write(js)
	section("netmap (keys redacted)")
	if nm == nil {
		b.WriteString("(none)")
	} else {
		js, _ = json.MarshalIndent(nm, "", "  ")
		b.Write(redactKeys(js))
	}
	section("metrics")
	if err := metrics.WriteText(&b, d.obs.reg); err != nil {
		fmt.Fprintf(&b, "(metrics: %v)\n", err)
	}
	lines := d.obs.logs.snapshot()
	section(fmt.Sprintf("logs (last %d lines)", len(lines)))
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	out := secretKeyRE.ReplaceAll(b.Bytes(), []byte("${1}_[redacted]"))
	out = bytes.ReplaceAll(out, []byte(priv), []byte("[private key redacted]"))
	out = bytes.ReplaceAll(out, []byte(privHex), []byte("[private key redacted]"))
	_, err := w.Write(out)
	return err
}

func (d *Daemon) serveBundle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := d.writeBundle(w); err != nil {
		d.log.Debug("debug bundle", "err", err)
	}
}
