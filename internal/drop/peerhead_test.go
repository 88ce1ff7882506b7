package drop

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endlessHeadPeer answers the offset query like a v2 receiver, then
// answers a file upload (or, with endlessOffset, the offset query itself)
// with a response head that never ends. It counts the bytes it managed
// to write.
func endlessHeadPeer(t *testing.T, endlessOffset bool) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var written atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.Method == http.MethodGet && !endlessOffset {
						io.Copy(io.Discard, req.Body)
						body := `{"offset":0}`
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"+body)
						continue
					}
					io.WriteString(c, "HTTP/1.1 100 Continue\r\n")
					line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
					c.SetWriteDeadline(time.Now().Add(20 * time.Second))
					for {
						n, err := io.WriteString(c, line)
						written.Add(int64(n))
						if err != nil {
							return
						}
					}
				}
			}(c)
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), &written
}

// TestSendRefusesEndlessResponseHead: a peer (an authenticated mesh
// member) that answers with a response head that never ends gets a
// clear error once the head passes the limit, instead of the sender
// buffering it until a deadline a minute away. Before the fix the send
// ran into the test's 10 s context.
func TestSendRefusesEndlessResponseHead(t *testing.T) {
	for _, tc := range []struct {
		name          string
		endlessOffset bool
	}{{"upload", false}, {"offset query", true}} {
		t.Run(tc.name, func(t *testing.T) {
			peer, _ := endlessHeadPeer(t, tc.endlessOffset)
			f, _ := srcFile(t, randomData(1000, 3))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var sent atomic.Int64
			_, err := NewClient(nil).SendFile(ctx, peer, "x.bin", f, func(int64) {}, &sent)
			if err == nil || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Fatalf("send to a peer with an endless response head: %v (context: %v)", err, ctx.Err())
			}
			if !strings.Contains(err.Error(), "header") {
				t.Fatalf("error does not say what was wrong: %v", err)
			}
		})
	}
}
