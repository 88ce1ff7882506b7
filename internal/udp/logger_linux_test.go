package udp

import (
	"context"
	"log/slog"
	"testing"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// TestLoggerDefaultsToDiscard: without SetLogger the transport's reports
// go nowhere (not to the process-wide slog.Default()); with it, to the
// logger given.
func TestLoggerDefaultsToDiscard(t *testing.T) {
	tr := New()
	if tr.logger().Enabled(context.Background(), slog.LevelError) {
		t.Fatal("a transport without a logger logs")
	}
	log, rec := logtest.New()
	tr.SetLogger(log)
	tr.logger().Warn("udp: test", "n", 1)
	if r, ok := rec.Find("udp: test"); !ok || r.Attrs["n"] != "1" {
		t.Fatalf("records:\n%s", rec.Text())
	}
	tr.SetLogger(nil)
	if tr.logger().Enabled(context.Background(), slog.LevelError) {
		t.Fatal("SetLogger(nil) logs")
	}
}
