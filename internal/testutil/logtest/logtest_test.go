package logtest

import (
	"log/slog"
	"testing"
)

func TestRecorderKeepsLevelMessageAndAttrs(t *testing.T) {
	log, rec := New()
	log.With("component", "relay").WithGroup("peer").Warn("refused", "addr", "198.18.0.1:1", slog.Int("n", 2))
	log.Debug("quiet")
	r, ok := rec.Find("refused")
	if !ok || r.Level != slog.LevelWarn || r.Attrs["component"] != "relay" || r.Attrs["peer.addr"] != "198.18.0.1:1" || r.Attrs["peer.n"] != "2" {
		t.Fatalf("got %v (found %v); all:\n%s", r, ok, rec.Text())
	}
	if len(rec.Records()) != 2 {
		t.Fatalf("records:\n%s", rec.Text())
	}
	if _, ok := rec.Find("absent"); ok {
		t.Fatal("found a message never logged")
	}
}
