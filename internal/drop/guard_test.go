package drop

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/warrenmesh/warren/internal/httpguard/guardtest"
)

// putWithHost sends a v1 PUT of data as name from 127.0.0.1 (alice's node
// "a" in the lab) with the given Host and extra headers.
func putWithHost(t *testing.T, l *lab, name string, data []byte, host string, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("PUT", "http://"+l.addr.String()+"/v1/files/"+name, bytes.NewReader(data))
	req.Header.Set("Warren-Size", strconv.Itoa(len(data)))
	req.Header.Set("Warren-Sha256", sum(data))
	req.Header.Set("Warren-Offset", "0")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return guardtest.Status(t, "tcp", l.addr.String(), req, host)
}

// TestPeerAPIChecksHost: a web page in a browser on one of alice's
// machines that rebinds a name of its own to the receiver's tunnel address
// reaches the peer API from an allowed sender address; it must not be
// able to push files (TS-2022-005). Only IP literals and the node's own
// MagicDNS names are served, and cross-origin browser requests are
// refused.
func TestPeerAPIChecksHost(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 1<<20)
	data := randomData(1000, 7)
	port := strconv.Itoa(int(l.addr.Port()))
	for i, c := range []struct {
		host string
		hdr  map[string]string
		want int
	}{
		{"evil.example:" + port, nil, http.StatusMisdirectedRequest},
		{"7f000001.rbndr.us:" + port, nil, http.StatusMisdirectedRequest},
		{"recv.warren.internal.evil.example", nil, http.StatusMisdirectedRequest},
		{l.addr.String(), map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{l.addr.String(), map[string]string{"Origin": "http://evil.example:" + port}, http.StatusForbidden},
	} {
		name := "pushed" + strconv.Itoa(i)
		if code := putWithHost(t, l, name, data, c.host, c.hdr); code != c.want {
			t.Errorf("PUT with Host %q %v: %d, want %d", c.host, c.hdr, code, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("Host %q %v: the file was written", c.host, c.hdr)
		}
	}
	for i, host := range []string{l.addr.String(), "recv.warren.internal:" + port, "RECV"} {
		name := "ok" + strconv.Itoa(i)
		if code := putWithHost(t, l, name, data, host, nil); code != http.StatusOK {
			t.Errorf("PUT with Host %q: %d, want 200", host, code)
		}
	}
}
