package main

import (
	"net/http"
	"testing"

	"github.com/oauth2-proxy/mockoidc"
)

// TestProviderRefusesForeignHost: a page that points a name of its own at
// the demo provider (DNS rebinding) is refused; its own address is served,
// and the listener has timeouts against idle and slow clients.
func TestProviderRefusesForeignHost(t *testing.T) {
	p, ln := startProvider(t)
	if s := p.m.Server; s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 {
		t.Errorf("timeouts: header %v read %v write %v idle %v", s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout)
	}
	get := func(host string) int {
		req, err := http.NewRequest("GET", "http://"+ln.Addr().String()+"/oidc"+mockoidc.DiscoveryEndpoint, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("evil.example"); code != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: %d, want 421", code)
	}
	if code := get(ln.Addr().String()); code == http.StatusMisdirectedRequest {
		t.Errorf("its own address refused: %d", code)
	}
}
