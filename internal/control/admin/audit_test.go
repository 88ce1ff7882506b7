package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestAuditRecordsChanges: every change through the API, accepted or
// refused, is in the audit log with the key, the action, the target and
// the source; reads are not; the log is listed with since.
func TestAuditRecordsChanges(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(http.StatusCreated, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(http.StatusOK, nil, "GET", "/api/v1/users", "")
		e.must(http.StatusConflict, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(http.StatusNoContent, nil, "DELETE", "/api/v1/users/alice", "")
		var es []admin.AuditEntry
		e.must(http.StatusOK, &es, "GET", "/api/v1/audit?since=1h", "")
		if len(es) != 3 {
			t.Fatalf("%d entries, want 3: %+v", len(es), es)
		}
		want := []struct {
			action, target string
			ok             bool
		}{
			{"POST /api/v1/users", "/api/v1/users", true},
			{"POST /api/v1/users", "/api/v1/users", false},
			{"DELETE /api/v1/users/{user}", "/api/v1/users/alice", true},
		}
		for i, w := range want {
			g := es[i]
			if g.Action != w.action || g.Target != w.target || g.OK != w.ok || !strings.HasPrefix(g.Actor, "apikey:") ||
				g.Source != "127.0.0.1" || g.At.IsZero() {
				t.Errorf("entry %d: %+v, want %+v", i, g, w)
			}
		}
		if !strings.Contains(es[1].Detail, "already exists") {
			t.Errorf("refusal detail %q", es[1].Detail)
		}
		if code, body := e.call("GET", "/api/v1/audit?since=soon", ""); code != http.StatusBadRequest || !strings.Contains(body, "since") {
			t.Errorf("bad since: %d %s", code, body)
		}
		e.must(http.StatusOK, &es, "GET", "/api/v1/audit?limit=1", "")
		if len(es) != 1 || es[0].Action != "DELETE /api/v1/users/{user}" {
			t.Errorf("limit=1: %+v", es)
		}
	})
}

// TestApproveNode: a node joined by sign-in in approval mode is listed as
// not approved until POST .../approve, which notifies and is audited.
func TestApproveNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		u, err := e.st.CreateUser(ctx, "ivy")
		if err != nil {
			t.Fatal(err)
		}
		k, _ := noise.GeneratePrivateKey()
		r, err := e.st.CreateRegistration(ctx, pubkey.Node{PublicKey: k.PublicKey()}, "kiosk", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.CompleteRegistration(ctx, r.RegID, u.ID, time.Time{}, false); err != nil {
			t.Fatal(err)
		}
		var n admin.Node
		e.must(http.StatusOK, &n, "GET", "/api/v1/nodes/kiosk", "")
		if n.Approved || !n.Interactive {
			t.Fatalf("before: %+v", n)
		}
		before := e.notified.Load()
		e.must(http.StatusOK, &n, "POST", "/api/v1/nodes/kiosk/approve", "")
		if !n.Approved || e.notified.Load() == before {
			t.Fatalf("after: %+v (notified %d)", n, e.notified.Load())
		}
		var es []admin.AuditEntry
		e.must(http.StatusOK, &es, "GET", "/api/v1/audit", "")
		if len(es) != 1 || es[0].Action != "POST /api/v1/nodes/{node}/approve" || es[0].Target != "/api/v1/nodes/kiosk/approve" || !es[0].OK {
			t.Fatalf("audit %+v", es)
		}
		e.must(http.StatusNotFound, nil, "POST", "/api/v1/nodes/nope/approve", "")
	})
}
