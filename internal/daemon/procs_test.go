package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/drop"
)

func TestProcsGovernor(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	g := &procsGovernor{enabled: true, low: 1, high: 2}
	runtime.GOMAXPROCS(g.low)
	end1 := g.begin()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("one transfer: %d Ps, want 2", n)
	}
	end2 := g.begin()
	end1()
	end1() // a second call does nothing
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("one transfer left: %d Ps, want 2", n)
	}
	end2()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("no transfer: %d Ps, want 1", n)
	}

	// Disabled (GOMAXPROCS set, many CPUs, or the pipeline datapath), or
	// absent: nothing changes.
	for _, g := range []*procsGovernor{{high: 2}, nil} {
		g.begin()()
		if n := runtime.GOMAXPROCS(0); n != 1 {
			t.Errorf("disabled governor changed Ps to %d", n)
		}
	}
}

// psReader is an upload body that records the Ps while it is read.
type psReader struct {
	data []byte
	ps   int
}

func (r *psReader) Read(p []byte) (int, error) {
	r.ps = runtime.GOMAXPROCS(0)
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestProcsOnlyAfterAuth: only an upload from an authenticated sender (a
// node of the same user) raises the Ps, wired as the daemon wires it; an
// unknown address or another user's node changes nothing, not even while
// it is being checked.
func TestProcsOnlyAfterAuth(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	g := &procsGovernor{enabled: true, low: 1, high: 2}
	runtime.GOMAXPROCS(g.low)
	in, err := drop.NewInbox(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var checked int
	srv := &drop.Server{Inbox: in, Owner: func() string { return "alice" }, Transfer: g.begin,
		Whois: func(a netip.Addr) (string, string, bool) {
			checked = runtime.GOMAXPROCS(0)
			switch a.String() {
			case "100.64.0.1":
				return "a", "alice", true
			case "100.64.0.2":
				return "m", "mallory", true
			}
			return "", "", false
		}}
	h := srv.Handler()
	data := []byte("hello")
	sum := sha256.Sum256(data)
	put := func(from string) (int, *psReader) {
		body := &psReader{data: append(data, hex.EncodeToString(sum[:])...)}
		req := httptest.NewRequest(http.MethodPut, "/v2/files/hello.txt", body)
		req.RemoteAddr = from + ":1234"
		req.ContentLength = int64(len(body.data))
		req.Header.Set("Warren-Size", strconv.Itoa(len(data)))
		req.Header.Set("Warren-Id", strings.Repeat("ab", drop.IDLen/2))
		req.Header.Set("Warren-Offset", "0")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, body
	}
	for _, from := range []string{"100.64.0.9", "100.64.0.2"} {
		checked = 0
		code, _ := put(from)
		if code != http.StatusForbidden || checked != 1 {
			t.Errorf("PUT from %s: status %d, %d Ps while its sender was checked, want 403 and 1", from, code, checked)
		}
		if n := runtime.GOMAXPROCS(0); n != 1 {
			t.Errorf("after a PUT from %s: %d Ps, want 1", from, n)
		}
	}
	code, body := put("100.64.0.1")
	if code != http.StatusOK || checked != 1 || body.ps != 2 {
		t.Errorf("PUT from alice's node: status %d, %d Ps while checked (want 1), %d while received (want 2)", code, checked, body.ps)
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("after an upload: %d Ps, want 1", n)
	}
}
