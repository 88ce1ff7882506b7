// Package logtest is the slog handler tests use to see what a package
// logged: each record's level, message and attributes (with those added by
// Logger.With), so a test can check that an event is logged at its own
// level with its structured attributes, not only that some text appeared.
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Record is one logged record.
type Record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string // values formatted with %v; groups as "group.key"
}

func (r Record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.Level, r.Msg)
	for k, v := range r.Attrs {
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

// Recorder keeps every record logged through the loggers it made.
type Recorder struct {
	mu      sync.Mutex
	records []Record
}

// New returns a logger at debug level whose records r keeps. (Failure
// messages print r.Text(): a record logged after the test ended must not
// reach testing.T.)
func New() (*slog.Logger, *Recorder) {
	r := &Recorder{}
	return slog.New(&handler{r: r}), r
}

// Records returns a copy of the records so far.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// Find returns the first record whose message contains substr, and whether
// there is one.
func (r *Recorder) Find(substr string) (Record, bool) {
	for _, rec := range r.Records() {
		if strings.Contains(rec.Msg, substr) {
			return rec, true
		}
	}
	return Record{}, false
}

// Text returns all records, one line each, for grepping and for failure
// messages.
func (r *Recorder) Text() string {
	var b strings.Builder
	for _, rec := range r.Records() {
		b.WriteString(rec.String())
		b.WriteByte('\n')
	}
	return b.String()
}

type handler struct {
	r      *Recorder
	attrs  []slog.Attr
	prefix string // the open groups, "a.b."
}

func (h *handler) Enabled(context.Context, slog.Level) bool { return true }

func (h *handler) Handle(_ context.Context, rec slog.Record) error {
	out := Record{Level: rec.Level, Msg: rec.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		addAttr(out.Attrs, "", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		addAttr(out.Attrs, h.prefix, a)
		return true
	})
	h.r.mu.Lock()
	h.r.records = append(h.r.records, out)
	h.r.mu.Unlock()
	return nil
}

func addAttr(m map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			addAttr(m, p, g)
		}
		return
	}
	m[prefix+a.Key] = fmt.Sprint(v.Any())
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.prefix != "" {
			a = slog.Attr{Key: strings.TrimSuffix(h.prefix, "."), Value: slog.GroupValue(a)}
		}
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}

// T returns a debug-level logger writing text lines to tb's output (shown
// for a failed or verbose test), the slog form of passing t.Logf.
func T(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
