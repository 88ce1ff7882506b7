package localapi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestServeChecksHost: the local API answers only requests for its own
// name (the client's "warrend", or localhost); a browser cannot reach a
// unix socket, but the check costs nothing and keeps the rule "every HTTP
// listener checks Host" without exceptions.
func TestServeChecksHost(t *testing.T) {
	path, _ := serve(t)
	status := func(method, host string) int {
		c, err := net.DialTimeout("unix", path, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		req, _ := http.NewRequest(method, "http://warrend/localapi/v1/status", nil)
		req.Host = host
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatalf("Host %q: %v", host, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
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
