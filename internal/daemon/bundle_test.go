package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestLogRing checks the ring keeps the last lines in order, bounded, and
// that the tee keeps Info lines even when the base logger is quieter, while
// the base logger still decides what it prints.
func TestLogRing(t *testing.T) {
	var base bytes.Buffer
	var r logRing
	log := r.wrap(slog.New(slog.NewTextHandler(&base, &slog.HandlerOptions{Level: slog.LevelWarn})))
	for i := range logRingLines + 10 {
		log.Info("line", "n", i)
	}
	log.Debug("debug line")
	log.With("sub", "x").Warn("warned")
	lines := r.snapshot()
	if len(lines) != logRingLines {
		t.Fatalf("%d lines kept, want %d", len(lines), logRingLines)
	}
	if !strings.Contains(lines[0], "n=11") || !strings.Contains(lines[len(lines)-2], fmt.Sprintf("n=%d", logRingLines+9)) {
		t.Fatalf("order: first %q, last-but-one %q", lines[0], lines[len(lines)-2])
	}
	if !strings.Contains(lines[len(lines)-1], "sub=x") || strings.Contains(strings.Join(lines, "\n"), "debug line") {
		t.Fatalf("last %q (attrs lost?) or a debug line kept at info", lines[len(lines)-1])
	}
	if strings.Contains(base.String(), "msg=line") || !strings.Contains(base.String(), "warned") {
		t.Fatalf("base logger output %q: want only the warning", base.String())
	}
	long := strings.Repeat("x", 3*logLineMax)
	log.Info(long)
	if l := r.snapshot(); len(l[len(l)-1]) > logLineMax {
		t.Fatalf("line of %d bytes kept", len(l[len(l)-1]))
	}
}

func TestRedact(t *testing.T) {
	in := []byte(`{"Key":"nbe/mwPvAlFsVfgQf/JKUvNMnu0Z4aRC9mLkscGUXSg=","x":"wkey_abc-DEF_1 wapi_Zz9"}`)
	out := redactKeys(in)
	if bytes.Contains(out, []byte("mwPvAlFsVfgQf")) || !bytes.Contains(out, []byte("nbe/mw…[redacted]")) {
		t.Fatalf("keys not redacted: %s", out)
	}
	out = secretKeyRE.ReplaceAll(out, []byte("${1}_[redacted]"))
	if bytes.Contains(out, []byte("abc-DEF")) || bytes.Contains(out, []byte("Zz9")) {
		t.Fatalf("auth/API keys not scrubbed: %s", out)
	}
}
