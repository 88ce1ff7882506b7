package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// auditPath is the admin API's audit log listing. The console serves its
// audit page only when the API answers it.
const auditPath = admin.Prefix + "audit"

// auditEntry is one entry of the audit log as the admin API lists it.
type auditEntry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
	Source string    `json:"source"`
	OK     bool      `json:"ok"`
}

type auditData struct {
	Since   string
	Entries []auditEntry // newest first
}

// auditLimit bounds the entries one page shows.
const auditLimit = 500

// auditPage shows the newest entries of the audit log, of the last
// ?since=DURATION (default 7d).
func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "Audit log", "audit")
	since := strings.TrimSpace(r.URL.Query().Get("since"))
	if since == "" {
		since = "7d"
	}
	d := auditData{Since: since}
	q := url.Values{"since": {since}, "limit": {strconv.Itoa(auditLimit)}}
	if err := c.call(r.Context(), http.MethodGet, auditPath+"?"+q.Encode(), nil, &d.Entries); err != nil {
		p.Error = err.Error()
	}
	slices.Reverse(d.Entries)
	p.Data = d
	c.render(w, http.StatusOK, "audit", p)
}
