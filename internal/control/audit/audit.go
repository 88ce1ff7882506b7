// Package audit owns how the coordination server's front ends (the admin
// API, the OIDC sign-in, the web console) record what people do: one
// store.AuditEntry per admin action or sign-in, with who, what, when and
// from where. Recording never fails the action it describes: a store error
// is logged and the action's own result stands.
package audit

import (
	"context"
	"log/slog"
	"net"
	"net/http"

	"github.com/warrenmesh/warren/internal/store"
)

// Source is where a request came from: the peer's IP address (proxy
// headers are not trusted).
func Source(r *http.Request) string {
	if r == nil {
		return "local"
	}
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// Recorder is where entries go: *store.Store.
type Recorder interface {
	RecordAudit(ctx context.Context, e store.AuditEntry) error
}

// Record appends one entry for an action taken through request r (nil for
// an action without one): actor is who ("apikey:wapi_PREFIX", "user:NAME"),
// action what ("node.delete"), target on what, detail anything further, ok
// false for a refused action. Errors go to log (nil: discarded).
func Record(ctx context.Context, st Recorder, log *slog.Logger, r *http.Request, actor, action, target, detail string, ok bool) {
	e := store.AuditEntry{Actor: actor, Action: action, Target: target, Detail: detail, Source: Source(r), OK: ok}
	if err := st.RecordAudit(context.WithoutCancel(ctx), e); err != nil && log != nil {
		log.Error("audit: recording failed", "action", action, "actor", actor, "err", err)
	}
}
