package cli

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
)

// serviceLog is the structured logger of `warren server` and `warren
// relay`: slog text lines on stderr with a component attribute, and a Logf
// adapter for the packages that log with a format string, which picks the
// level from the message (a failure or a refusal is a warning).
type serviceLog struct {
	*slog.Logger
}

func newServiceLog(w io.Writer, component string, debug bool) serviceLog {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return serviceLog{slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("component", component)}
}

// Logf logs a formatted message at the level its words call for.
func (l serviceLog) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "error") || strings.Contains(lower, "failed") || strings.Contains(lower, "cannot"):
		l.Error(msg)
	case strings.Contains(lower, "refused") || strings.Contains(lower, "dropped") || strings.Contains(lower, "timeout"):
		l.Warn(msg)
	default:
		l.Info(msg)
	}
}

// std is a log.Logger for net/http's ErrorLog, at warning level.
func (l serviceLog) std() *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }
