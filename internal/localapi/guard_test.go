package localapi

import (
	"net/http"
	"testing"

	"github.com/warrenmesh/warren/internal/httpguard/guardtest"
)

// TestServeChecksHost: the local API answers only requests for its own
// name (the client's "warrend", or localhost); a browser cannot reach a
// unix socket, but the check costs nothing and keeps the rule "every HTTP
// listener checks Host" without exceptions.
func TestServeChecksHost(t *testing.T) {
	path, _ := serve(t)
	status := func(method, host string) int {
		req, _ := http.NewRequest(method, "http://warrend/localapi/v1/status", nil)
		return guardtest.Status(t, "unix", path, req, host)
	}
	for _, h := range []string{"warrend", "localhost"} {
		if code := status("GET", h); code != http.StatusOK {
			t.Errorf("Host %q: %d, want 200", h, code)
		}
	}
	for _, h := range []string{"evil.example", "warrend.evil.example", "127.0.0.1.nip.io"} {
		if code := status("GET", h); code != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: %d, want 421", h, code)
		}
	}
}
