package cli

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// logOptions are --log-level and --log-format of the long-running commands
// daemon and wg (server and relay declare theirs, log_level and log_format,
// in package config; serviceLogger builds their logger): they build the one *slog.Logger the command
// passes down to the packages it runs, which log at the levels they choose.
type logOptions struct {
	level, format string
}

// bind adds --log-level (default def) and --log-format to fs.
func (o *logOptions) bind(fs *pflag.FlagSet, def string) {
	fs.StringVar(&o.level, "log-level", def, "log messages at this `LEVEL` and above: debug, info, warn or error")
	fs.StringVar(&o.format, "log-format", "text", "log lines as `FORMAT`: text (logfmt key=value) or json (one object per line)")
}

// parseLevel reads a --log-level value.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info": // "": the zero logOptions
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// handler checks the options and returns the handler writing to w at level.
func (o *logOptions) handler(w io.Writer, level slog.Level) (slog.Handler, error) {
	return logHandler(w, o.format, level)
}

// logHandler is the handler of format (text or json) writing to w at
// level (a *slog.LevelVar where a SIGHUP may change it).
func logHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// logger checks the options and returns the command's logger on w.
func (o *logOptions) logger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(o.level)
	if err != nil {
		return nil, err
	}
	h, err := o.handler(w, level)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// httpErrorLog is a log.Logger for net/http's ErrorLog: its lines go to l
// at warning level.
func httpErrorLog(l *slog.Logger) *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }
