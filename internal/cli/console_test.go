package cli

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// `warren server` serves the console under /admin/ on its listener: the
// sign-in page with its strict policy, sign-in with an API key from
// `server apikey create`, a page after it, and the listener's own guard
// in front (a cross-origin post is refused before the console sees it,
// and the console's own form passes it).
func TestServerServesConsole(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(ts.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	post := func(path string, form url.Values, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", ts.url+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp, body := get("/admin/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `action="/admin/signin"`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("sign-in page: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	if resp := post("/admin/signin", url.Values{"key": {key}}, "http://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin sign-in: %d", resp.StatusCode)
	}
	if resp := post("/admin/signin", url.Values{"key": {key}}, ts.url); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/admin/nodes" {
		t.Fatalf("sign-in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	_, body = get("/admin/users")
	if m := regexp.MustCompile(`name="csrf" value="[^"]+"`).FindString(body); m == "" {
		t.Fatalf("users page without a form token:\n%s", body)
	}
}
