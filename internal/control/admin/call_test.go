package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/store"
)

// An in-process call runs the same route as HTTP: it creates a user (and
// notifies), validates like the API, refuses paths outside the API, and
// passes the policy as raw text.
func TestCallInProcess(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "w.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	notified := 0
	h := admin.New(st, func() { notified++ })
	code, body := h.Call(ctx, http.MethodPost, "/api/v1/users", admin.NameRequest{Name: "carol"})
	var u admin.User
	if code != http.StatusCreated || json.Unmarshal(body, &u) != nil || u.Name != "carol" || notified != 1 {
		t.Fatalf("create user: %d %s (notified %d)", code, body, notified)
	}
	if _, err := st.GetUserByName(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	code, body = h.Call(ctx, http.MethodPost, "/api/v1/authkeys", admin.AuthKeyRequest{User: "carol", Expiration: "soon"})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "invalid duration") {
		t.Fatalf("bad expiration: %d %s", code, body)
	}
	code, body = h.Call(ctx, http.MethodGet, "/healthz", nil)
	if code != http.StatusNotFound {
		t.Fatalf("outside the API: %d %s", code, body)
	}
	code, body = h.Call(ctx, http.MethodPut, "/api/v1/policy", []byte("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}\n"))
	if code != http.StatusOK {
		t.Fatalf("policy: %d %s", code, body)
	}
	actx := admin.WithActor(ctx, "user:ada", "192.0.2.7:5555")
	if admin.ActorFrom(actx) != "user:ada" || admin.ActorFrom(ctx) != "" {
		t.Fatal("ActorFrom")
	}
	code, body = h.Call(actx, http.MethodGet, "/api/v1/users?user=carol", nil)
	if code != http.StatusOK || !strings.Contains(string(body), "carol") {
		t.Fatalf("list: %d %s", code, body)
	}
}
