package drop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// lab is a peer API on loopback: 127.0.0.1 is alice's node "a", 127.0.0.2
// mallory's node "m", 127.0.0.3 alice's node "a2"; anything else is
// unknown.
type lab struct {
	in    *Inbox
	srv   *Server
	addr  netip.AddrPort
	alice *Client
	evil  *Client
	log   *logtest.Recorder
}

func newLab(t *testing.T, dir string, quota int64) *lab {
	t.Helper()
	in, err := NewInbox(dir, quota)
	if err != nil {
		t.Fatal(err)
	}
	logger, rec := logtest.New()
	l := &lab{in: in, log: rec}
	l.srv = &Server{Inbox: in, Owner: func() string { return "alice" },
		Names: func() []string { return []string{"recv.warren.internal", "recv"} },
		Whois: func(a netip.Addr) (string, string, bool) {
			switch a.String() {
			case "127.0.0.1":
				return "a", "alice", true
			case "127.0.0.2":
				return "m", "mallory", true
			case "127.0.0.3":
				return "a2", "alice", true
			}
			return "", "", false
		},
		Logger: logger,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := l.srv.HTTPServer()
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	l.addr = netip.MustParseAddrPort(ln.Addr().String())
	l.alice = NewClient(nil)
	l.evil = NewClient(func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		return d.DialContext(ctx, network, addr)
	})
	return l
}

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func header(name string, data []byte) Header {
	s := sha256.Sum256(data)
	return Header{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(s[:])}
}

func status(err error) int {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Status
	}
	return 0
}

func TestSendReceive(t *testing.T) {
	l := newLab(t, t.TempDir(), 0)
	ctx := context.Background()
	data := randomData(3<<20+17, 1)
	h := header("data.bin", data)
	off, err := l.alice.Offset(ctx, l.addr, h)
	if err != nil || off != 0 {
		t.Fatalf("offset %d, %v", off, err)
	}
	f, err := l.alice.Put(ctx, l.addr, h, 0, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "data.bin" || f.From.Name != "a" || f.From.User != "alice" {
		t.Fatalf("stored %+v", f)
	}
	got, err := os.ReadFile(filepath.Join(l.in.Dir(), "data.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (%v)", err)
	}
	// Asking again: the file is there, nothing to send.
	if off, err := l.alice.Offset(ctx, l.addr, h); err != nil || off != h.Size {
		t.Fatalf("offset of a complete file: %d, %v", off, err)
	}
	// Another file of the same name waits beside it.
	other := randomData(100, 2)
	f, err = l.alice.Put(ctx, l.addr, header("data.bin", other), 0, bytes.NewReader(other))
	if err != nil || f.Name != "data (1).bin" {
		t.Fatalf("second data.bin: %+v, %v", f, err)
	}
	// Empty file.
	f, err = l.alice.Put(ctx, l.addr, header("empty", nil), 0, bytes.NewReader(nil))
	if err != nil || f.Size != 0 {
		t.Fatalf("empty file: %+v %v", f, err)
	}
	list, err := l.in.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if w := l.in.Waiting(""); w != int64(len(data)+len(other)) {
		t.Fatalf("waiting %d", w)
	}
	if err := l.in.Remove("data.bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.in.Open("data.bin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open removed: %v", err)
	}
}

// cutReader returns the first n bytes of data, then fails like a dead
// connection.
type cutReader struct {
	r *bytes.Reader
	n int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("link cut")
	}
	p = p[:min(len(p), c.n)]
	m, err := c.r.Read(p)
	c.n -= m
	return m, err
}

// TestResume: a transfer cut halfway resumes from what the receiver wrote,
// so the receiver writes each byte once; also across an inbox reopened (a
// daemon restart, with no saved hash state) and after a stale connection
// that the receiver had not noticed dead.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 0)
	ctx := context.Background()
	data := randomData(8<<20, 3)
	h := header("big.iso", data)
	_, err := l.alice.Put(ctx, l.addr, h, 0, &cutReader{bytes.NewReader(data), 3 << 20})
	if err == nil {
		t.Fatal("cut transfer succeeded")
	}
	var off int64
	// The receiver sees the broken connection a moment later.
	deadline := time.Now().Add(5 * time.Second)
	for off < 1<<20 && time.Now().Before(deadline) {
		off, err = l.alice.Offset(ctx, l.addr, h)
		if err != nil {
			t.Fatal(err)
		}
	}
	if off < 1<<20 || off > 3<<20 {
		t.Fatalf("offset after the cut %d", off)
	}
	if _, err := os.Stat(filepath.Join(dir, "big.iso")); !os.IsNotExist(err) {
		t.Fatal("a partial file appears under its final name")
	}
	if _, err := os.Stat(filepath.Join(dir, ".big.iso.partial")); err != nil {
		t.Fatal(err)
	}
	// Cut again after 2 MiB more, then reopen the inbox without the
	// saved hash state: the hash is recomputed from the disk.
	l.alice.Put(ctx, l.addr, h, off, &cutReader{bytes.NewReader(data[off:]), 2 << 20})
	settle(t, l.in, h.Name) // l's receiver may still write what reached it
	before := l.in.Received()
	l2 := newLab(t, dir, 0)
	var pi partialInfo
	readJSON(l2.in.partInfoPath(h.Name), &pi)
	pi.HashState = nil
	writeJSON(l2.in.partInfoPath(h.Name), pi)
	off2, err := l2.alice.Offset(ctx, l2.addr, h)
	if err != nil || off2 <= off {
		t.Fatalf("second offset %d (first %d): %v", off2, off, err)
	}
	// A stale transfer: the body stalls; asking for the offset again
	// aborts it.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := l2.alice.Put(ctx, l2.addr, h, off2, pr)
		done <- err
	}()
	pw.Write(data[off2 : off2+1<<20])
	// Asking for the offset aborts the stale transfer, dropping what the
	// receiver has not read yet: let it write the whole MiB first.
	for deadline := time.Now().Add(10 * time.Second); l2.in.Received() < 1<<20; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver wrote %d bytes of the stale transfer's MiB", l2.in.Received())
		}
	}
	off3, err := NewClient(nil).Offset(ctx, l2.addr, h)
	if err != nil || off3 != off2+1<<20 {
		t.Fatalf("offset while stale %d (want %d): %v", off3, off2+1<<20, err)
	}
	pw.CloseWithError(errors.New("gone"))
	<-done
	f, err := l2.alice.Put(ctx, l2.addr, h, off3, bytes.NewReader(data[off3:]))
	if err != nil {
		t.Fatal(err)
	}
	checkResumed(t, dir, f.Name, data, before+l2.in.Received())
}

// checkResumed checks that a resumed transfer left the file name in dir
// with exactly data, that the receiver wrote each byte once (written in
// all, over the interrupted and the resumed transfer), and that no partial
// file is left.
func checkResumed(t *testing.T, dir, name string, data []byte, written int64) {
	t.Helper()
	got, _ := os.ReadFile(filepath.Join(dir, name))
	if !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}
	if written != int64(len(data)) {
		t.Fatalf("receiver wrote %d bytes for a file of %d: bytes were sent twice", written, len(data))
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, ".*partial*")); len(ents) != 0 {
		t.Fatalf("partial files left: %v", ents)
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 1<<20)
	ctx := context.Background()
	data := randomData(1000, 4)
	h := header("x.txt", data)

	// Another user's node.
	_, err := l.evil.Put(ctx, l.addr, h, 0, bytes.NewReader(data))
	if status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "belongs to user mallory") {
		t.Fatalf("mallory: %v", err)
	}
	if r, ok := l.log.Find("file drop: refused"); !ok || r.Level != slog.LevelWarn || r.Attrs["sender"] != "m" ||
		r.Attrs["user"] != "mallory" || r.Attrs["owner"] != "alice" || r.Attrs["from"] != "127.0.0.2" {
		t.Fatalf("refusal logged as %v; all:\n%s", r, l.log.Text())
	}
	// Corrupt data: the declared hash does not match.
	bad := header("x.txt", append([]byte{}, data...))
	data2 := append([]byte{}, data...)
	data2[500] ^= 1
	_, err = l.alice.Put(ctx, l.addr, bad, 0, bytes.NewReader(data2))
	if status(err) != http.StatusUnprocessableEntity {
		t.Fatalf("corrupt: %v", err)
	}
	// Over the quota.
	big := randomData(2<<20, 5)
	_, err = l.alice.Offset(ctx, l.addr, header("big", big))
	if status(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("quota: %v", err)
	}
	_, err = l.alice.Put(ctx, l.addr, header("big", big), 0, bytes.NewReader(big))
	if status(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("quota put: %v", err)
	}
	// Hostile names, straight on the wire.
	for _, name := range []string{"../../etc/passwd", "a/b", "CON", "a\x00b", "evil\u202Etxt.exe", ".hidden", "..", strings.Repeat("x", 300)} {
		hh := header(name, data)
		_, err := l.alice.Put(ctx, l.addr, hh, 0, bytes.NewReader(data))
		if s := status(err); s != http.StatusBadRequest && (s < 300 || s >= 400) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("inbox not empty after refusals: %v", names)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "etc")); err == nil {
		t.Fatal("a file escaped the inbox")
	}
}

// TestDiskFull: on a tiny tmpfs a file that cannot fit is refused before a
// byte is sent, and one that runs out of space midway fails with a clear
// error and leaves nothing behind.
func TestDiskFull(t *testing.T) {
	nettest.NeedNetns(t) // root, for mount
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	inbox := filepath.Join(dir, "inbox")
	l := newLab(t, inbox, 0)
	ctx := context.Background()
	big := randomData(6<<20, 6)
	_, err := l.alice.Offset(ctx, l.addr, header("big", big))
	if status(err) != http.StatusInsufficientStorage || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("too big: %v", err)
	}
	// 3 MiB fits at first; 2 MiB of filler arrive meanwhile.
	mid := randomData(3<<20, 7)
	h := header("mid", mid)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := l.alice.Put(ctx, l.addr, h, 0, pr)
		done <- err
	}()
	pw.Write(mid[:1<<20])
	if err := os.WriteFile(filepath.Join(dir, "filler"), randomData(2<<20, 8), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() { pw.Write(mid[1<<20:]); pw.Close() }()
	err = <-done
	if status(err) != http.StatusInsufficientStorage || !strings.Contains(err.Error(), "after") {
		t.Fatalf("disk full midway: %v", err)
	}
	t.Logf("sender saw: %v", err)
	if r, ok := l.log.Find("file drop: receive failed"); !ok || r.Level != slog.LevelWarn || r.Attrs["sender"] != "a" ||
		!strings.Contains(r.Attrs["err"], "disk is full") || !strings.Contains(r.Attrs["err"], "partial file was removed") {
		t.Fatalf("receiver log: %s", l.log.Text())
	}
	if ents, _ := os.ReadDir(inbox); len(ents) != 0 {
		t.Fatalf("inbox not empty: %v", ents)
	}
}
