package admin_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// TestInternalErrorLogged: a store failure behind a request is answered
// with a bare 500 and logged at error level with the request, on the
// logger given with WithLogger; the API key is not in the log.
func TestInternalErrorLogged(t *testing.T) {
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := st.CreateAPIKey(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	hs := httptest.NewServer(admin.New(st, nil, admin.WithLogger(log)))
	defer hs.Close()
	st.Close() // every query now fails
	req, _ := http.NewRequest("GET", hs.URL+"/api/v1/users", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r, ok := rec.Find("admin:")
	if !ok || r.Level != slog.LevelError || r.Attrs["method"] != "GET" || r.Attrs["path"] != "/api/v1/users" || r.Attrs["err"] == "" {
		t.Fatalf("logged %v; all:\n%s", r, rec.Text())
	}
	if strings.Contains(rec.Text(), key) {
		t.Fatalf("API key in the log:\n%s", rec.Text())
	}
}
