package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/warrenmesh/warren/internal/control/audit"
	"github.com/warrenmesh/warren/internal/store"
)

// AuditPath lists the audit log.
const AuditPath = Prefix + "audit"

// AuditEntry is one audit log entry as the API shows it.
type AuditEntry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Source string    `json:"source"`
	OK     bool      `json:"ok"`
}

// MaxAuditList bounds one listing.
const MaxAuditList = 10000

type actorKey struct{}

// withActor remembers who a request is from ("apikey:wapi_PREFIX").
func withActor(r *http.Request, actor string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), actorKey{}, actor))
}

func actorOf(r *http.Request) string {
	if a, _ := r.Context().Value(actorKey{}).(string); a != "" {
		return a
	}
	return ActorFrom(r.Context()) // the web console's caller (WithActor)
}

// recordChange audits one request that may change something (every method
// but GET): the route's pattern is the action, the path the target, the
// refusal (if any) the detail.
func (a *api) recordChange(r *http.Request, pattern string, code int, err error) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return
	}
	detail := ""
	if err != nil {
		code, detail = http.StatusInternalServerError, "internal server error"
		var ae *apiError
		if errors.As(err, &ae) {
			code, detail = ae.code, oneLine(ae.msg)
		} else if store.IsUnavailable(err) {
			code, detail = http.StatusServiceUnavailable, unavailableMsg
		}
	}
	ok := err == nil && code < 400
	if !ok && detail == "" {
		detail = "status " + strconv.Itoa(code)
	}
	audit.Record(r.Context(), a.st, a.log, r, actorOf(r), pattern, r.URL.Path, detail, ok)
}

// listAudit is GET /api/v1/audit[?since=DURATION][&limit=N]: the entries
// of the last DURATION (default all), oldest first, at most limit of the
// newest (default and cap MaxAuditList).
func (a *api) listAudit(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		d, err := ParseDuration(s)
		if err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "since: %v", err)
		}
		since = time.Now().Add(-d)
	}
	limit := MaxAuditList
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return 0, nil, errorf(http.StatusBadRequest, "limit %q is not a positive integer", s)
		}
		limit = min(n, MaxAuditList)
	}
	es, err := a.st.ListAudit(r.Context(), since, limit)
	if err != nil {
		return 0, nil, storeErr(err, "audit log")
	}
	out := make([]AuditEntry, 0, len(es))
	for _, e := range es {
		out = append(out, auditEntry(e))
	}
	return http.StatusOK, out, nil
}

func auditEntry(e *store.AuditEntry) AuditEntry {
	return AuditEntry{ID: e.ID, At: e.At.UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail, Source: e.Source, OK: e.OK}
}
