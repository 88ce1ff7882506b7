// Package guardtest is the test side of httpguard: it sends a request
// with a Host header of the test's choosing (as a page that rebinds a name
// would) over a connection of its own and returns the status, so each
// listener's test says only which hosts and headers it expects to pass.
package guardtest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Status dials network/addr, sends req with req.Host set to host (and the
// request's own headers), and returns the response's status code. Any
// failure to talk HTTP fails the test.
func Status(t testing.TB, network, addr string, req *http.Request, host string) int {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req.Host = host
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("%s %s Host %q: %v", req.Method, req.URL.Path, host, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
