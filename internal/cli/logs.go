package cli

import (
	"io"
	"log"
	"log/slog"
)

// newServiceLog returns the logger of `warren server` and `warren relay`:
// slog text lines on stderr with a component attribute, at info level (or
// debug). The packages they run log through it at the levels they choose.
func newServiceLog(w io.Writer, component string, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("component", component)
}

// httpErrorLog is a log.Logger for net/http's ErrorLog: its lines go to l
// at warning level.
func httpErrorLog(l *slog.Logger) *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }
