package drop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// srcFile writes data to a new file and opens it for reading.
func srcFile(t *testing.T, data []byte) (*os.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// hookConn calls hook once its writes after the first (the request
// header) passed n bytes; if hook returns an error, the connection
// fails like a cut link with the bytes past n unsent.
type hookConn struct {
	net.Conn
	first bool
	left  int64
	hook  func() error
}

func (c *hookConn) Write(p []byte) (int, error) {
	if !c.first {
		c.first = true
		return c.Conn.Write(p)
	}
	if c.hook == nil || c.left >= int64(len(p)) {
		c.left -= int64(len(p))
		return c.Conn.Write(p)
	}
	m, err := c.Conn.Write(p[:c.left])
	hook := c.hook
	c.hook = nil
	if err != nil {
		return m, err
	}
	if herr := hook(); herr != nil {
		c.Conn.Close()
		return m, herr
	}
	n, err := c.Conn.Write(p[m:])
	return m + n, err
}

// hookClient is alice's client whose PUT connections run hook after n
// body bytes.
func hookClient(n int64, hook func() error) *Client {
	return NewClient(func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &hookConn{Conn: c, left: n, hook: hook}, nil
	})
}

// cut fails the connection once the receiver had a moment to take the
// bytes before the cut (the sender asking why its send failed aborts the
// receiver's side, dropping what it has not read yet). The moment is
// generous: the receiver must read up to 3 MiB in it on a loaded machine.
func cut() error {
	time.Sleep(300 * time.Millisecond)
	return errors.New("link cut")
}

// settle waits until the receiver has written what reached it of a cut
// transfer of name (asking for the offset at once would abort it).
func settle(t *testing.T, in *Inbox, name string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		in.mu.Lock()
		busy := in.active[name] != nil
		in.mu.Unlock()
		if !busy {
			return
		}
	}
	t.Fatalf("the receiver still receives %s", name)
}

func send(t *testing.T, c *Client, l *lab, name string, f *os.File) (*File, int64, int64, error) {
	t.Helper()
	var sent atomic.Int64
	off := int64(-1)
	file, err := c.SendFile(context.Background(), l.addr, name, f, func(o int64) { off = o }, &sent)
	return file, off, sent.Load(), err
}

func TestSendFile(t *testing.T) {
	l := newLab(t, t.TempDir(), 0)
	data := randomData(5<<20+3, 11)
	f, _ := srcFile(t, data)
	file, off, sent, err := send(t, l.alice, l, "data.bin", f)
	if err != nil || off != 0 || sent != int64(len(data)) {
		t.Fatalf("send: %v, from %d, %d sent", err, off, sent)
	}
	if file.Name != "data.bin" || file.SHA256 != sum(data) || file.From.Name != "a" || file.ID == "" {
		t.Fatalf("stored %+v", file)
	}
	got, err := os.ReadFile(filepath.Join(l.in.Dir(), "data.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (%v)", err)
	}
	// Again: the file waits complete, nothing is sent.
	if _, off, sent, err := send(t, l.alice, l, "data.bin", f); err != nil || off != int64(len(data)) || sent != 0 {
		t.Fatalf("again: %v, from %d, %d sent", err, off, sent)
	}
	// Empty file: just the trailer.
	e, _ := srcFile(t, nil)
	if file, _, _, err := send(t, l.alice, l, "empty", e); err != nil || file.Size != 0 || file.SHA256 != sum(nil) {
		t.Fatalf("empty: %+v, %v", file, err)
	}
	// Another user's node.
	if _, _, _, err := send(t, l.evil, l, "x", f); status(err) != http.StatusForbidden {
		t.Fatalf("mallory: %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(l.in.Dir(), ".*partial*")); len(ents) != 0 {
		t.Fatalf("partial files left: %v", ents)
	}
}

// TestSendFileResume: a v2 send cut midway resumes from what the receiver
// holds, with the receiver's hash state saved or recomputed from its disk,
// and the trailer still covers the whole file; a cut just before the
// trailer resumes with the trailer alone. Another node's partial of the
// same name is not resumed.
func TestSendFileResume(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 0)
	data := randomData(8<<20, 12)
	f, _ := srcFile(t, data)
	fi, _ := f.Stat()
	h := Header{Name: "big.iso", Size: fi.Size(), ID: FileID(fi)}
	ctx := context.Background()
	if _, _, _, err := send(t, hookClient(3<<20, cut), l, h.Name, f); err == nil {
		t.Fatal("cut transfer succeeded")
	}
	settle(t, l.in, h.Name)
	off, done, err := l.alice.OffsetV2(ctx, l.addr, h)
	if err != nil || done || off < 1<<20 || off > 3<<20 {
		t.Fatalf("offset after the cut %d, %v, %v", off, done, err)
	}
	if _, err := os.Stat(filepath.Join(dir, h.Name)); !os.IsNotExist(err) {
		t.Fatal("a partial file appears under its final name")
	}
	// a2, another of alice's nodes, sending a file of that name: its own.
	a2 := NewClient(func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
		return d.DialContext(ctx, network, addr)
	})
	if o, _, err := a2.OffsetV2(ctx, l.addr, h); err != nil || o != 0 {
		t.Fatalf("a2's offset for a's partial: %d, %v", o, err)
	}
	// Cut again 2 MiB later, then reopen the inbox without the saved hash
	// state: the receiver hashes its prefix from the disk.
	if _, o, _, err := send(t, hookClient(2<<20, cut), l, h.Name, f); err == nil || o != off {
		t.Fatalf("second cut send from %d (want %d): %v", o, off, err)
	}
	settle(t, l.in, h.Name)
	before := l.in.Received()
	l2 := newLab(t, dir, 0)
	var pi partialInfo
	readJSON(l2.in.partInfoPath(h.Name), &pi)
	pi.HashState = nil
	writeJSON(l2.in.partInfoPath(h.Name), pi)
	off2, _, err := l2.alice.OffsetV2(ctx, l2.addr, h)
	if err != nil || off2 <= off {
		t.Fatalf("second offset %d (first %d): %v", off2, off, err)
	}
	// Cut after all the bytes, before the trailer.
	if _, o, _, err := send(t, hookClient(h.Size-off2, cut), l2, h.Name, f); err == nil || o != off2 {
		t.Fatalf("send cut before the trailer from %d (want %d): %v", o, off2, err)
	}
	settle(t, l2.in, h.Name)
	if o, done, err := l2.alice.OffsetV2(ctx, l2.addr, h); err != nil || o != h.Size || done {
		t.Fatalf("offset with only the trailer missing: %d %v %v", o, done, err)
	}
	file, o, sent, err := send(t, l2.alice, l2, h.Name, f)
	if err != nil || o != h.Size || sent != 0 || file.SHA256 != sum(data) {
		t.Fatalf("trailer only: %+v from %d, %d sent, %v", file, o, sent, err)
	}
	checkResumed(t, dir, file.Name, data, before+l2.in.Received())
}

// TestSendFileChanged: a file that changes while it is sent never
// arrives torn: a change of its modification time fails the send (no
// trailer), and the next send starts over; a change that keeps the
// modification time, between a cut and the resume, fails the trailer's
// check and the partial is discarded.
func TestSendFileChanged(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 0)
	data := randomData(4<<20, 13)
	f, path := srcFile(t, data)
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	data[len(data)-1] ^= 1
	_, _, _, err = send(t, hookClient(1<<20, func() error {
		w.WriteAt(data[len(data)-1:], int64(len(data)-1))
		return os.Chtimes(path, time.Time{}, time.Now().Add(time.Hour))
	}), l, "f", f)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("send of a changing file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "f")); !os.IsNotExist(err) {
		t.Fatal("a changed file was stored")
	}
	file, off, _, err := send(t, l.alice, l, "f", f)
	if err != nil || off != 0 || file.SHA256 != sum(data) {
		t.Fatalf("send after the change: %+v from %d: %v", file, off, err)
	}
	l.in.Remove("f")

	// Cut, rewrite a byte of the part already sent keeping the
	// modification time, resume: the trailer does not match.
	fi, _ := f.Stat()
	if _, _, _, err := send(t, hookClient(2<<20, cut), l, "g", f); err == nil {
		t.Fatal("cut send succeeded")
	}
	settle(t, l.in, "g")
	data[100] ^= 1
	w.WriteAt(data[100:101], 100)
	os.Chtimes(path, time.Time{}, fi.ModTime())
	_, off, _, err = send(t, l.alice, l, "g", f)
	if status(err) != http.StatusUnprocessableEntity || off == 0 {
		t.Fatalf("resume over a rewritten prefix (from %d): %v", off, err)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, ".*partial*")); len(ents) != 0 {
		t.Fatalf("partial files left: %v", ents)
	}
	if file, off, _, err = send(t, l.alice, l, "g", f); err != nil || off != 0 || file.SHA256 != sum(data) {
		t.Fatalf("send again: %+v from %d: %v", file, off, err)
	}
}

// TestSendFileV1Peer: a peer that does not serve v2 gets v1.
func TestSendFileV1Peer(t *testing.T) {
	l := newLab(t, t.TempDir(), 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := l.srv.Handler()
	hs := &http.Server{ConnContext: ConnContext, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	l.addr = netip.MustParseAddrPort(ln.Addr().String())
	data := randomData(1<<20+5, 14)
	f, _ := srcFile(t, data)
	file, off, sent, err := send(t, l.alice, l, "old", f)
	if err != nil || off != 0 || sent != int64(len(data)) || file.SHA256 != sum(data) || file.ID != "" {
		t.Fatalf("v1 send: %+v from %d, %d sent: %v", file, off, sent, err)
	}
	if _, off, _, err := send(t, l.alice, l, "old", f); err != nil || off != int64(len(data)) {
		t.Fatalf("v1 again: from %d: %v", off, err)
	}
}

// TestTrailerRefused: a v2 PUT whose trailer is not the SHA-256 of the
// bytes, or not a SHA-256 at all, is refused and leaves nothing.
func TestTrailerRefused(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t, dir, 0)
	data := randomData(1000, 15)
	put := func(trailer string, size int) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, fileURLV2(l.addr, "t"), bytes.NewReader(append(append([]byte{}, data...), trailer...)))
		req.Header.Set("Warren-Size", fmt.Sprint(size))
		req.Header.Set("Warren-Id", strings.Repeat("0", IDLen))
		req.Header.Set("Warren-Offset", "0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		err = decodeAnswer(resp, nil)
		if err == nil {
			return 200, ""
		}
		return status(err), err.Error()
	}
	for _, tr := range []string{sum(data[1:]), strings.ToUpper(sum(data)), strings.Repeat("g", 64)} {
		if code, msg := put(tr, len(data)); code != http.StatusUnprocessableEntity {
			t.Errorf("trailer %q: %d %s", tr, code, msg)
		}
	}
	if code, msg := put(sum(data)[:63], len(data)); code != http.StatusBadRequest {
		t.Errorf("short trailer: %d %s", code, msg)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("inbox not empty: %v", ents)
	}
	if code, msg := put(sum(data), len(data)); code != 200 {
		t.Fatalf("good trailer: %d %s", code, msg)
	}
}

// FuzzParseHeaderV2: whatever a sender puts in the size and transfer ID,
// the parser either refuses it or returns a header that passes the checks.
func FuzzParseHeaderV2(f *testing.F) {
	f.Add("a.txt", "10", strings.Repeat("ab", IDLen/2))
	f.Add("../x", "-1", "zz")
	f.Add("a", "99999999999999999999", strings.Repeat("AB", IDLen/2))
	f.Fuzz(func(t *testing.T, name, size, id string) {
		h, err := ParseHeaderV2(name, size, id)
		if err != nil {
			return
		}
		if h.Size < 0 || len(h.ID) != IDLen || h.SHA256 != "" || ValidName(h.Name) != nil || h.check() != nil {
			t.Fatalf("accepted %+v", h)
		}
	})
}

// FuzzParseTrailer: a trailer is accepted only as 64 lowercase hex digits.
func FuzzParseTrailer(f *testing.F) {
	f.Add([]byte(strings.Repeat("0f", 32)))
	f.Add([]byte(strings.Repeat("0F", 32)))
	f.Add([]byte("xyz"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseTrailer(b)
		if err != nil {
			return
		}
		if d, err := hex.DecodeString(s); err != nil || len(d) != 32 || hex.EncodeToString(d) != s {
			t.Fatalf("accepted %q", b)
		}
	})
}

// BenchmarkSendFile sends a 256 MiB file over loopback into an inbox on
// the disk of the test's temporary directory and reports the CPU time
// both ends used per GB (the whole process: sender, receiver, kernel
// work done in their system calls), besides the throughput.
func BenchmarkSendFile(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	l := newLab(&testing.T{}, filepath.Join(dir, "inbox"), 1<<40)
	path := filepath.Join(dir, "src")
	if err := os.WriteFile(path, randomData(size, 16), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.SetBytes(size)
	b.ResetTimer()
	c0 := cpu()
	for i := range b.N {
		var sent atomic.Int64
		file, err := l.alice.SendFile(context.Background(), l.addr, fmt.Sprintf("f%d", i), f, func(int64) {}, &sent)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(filepath.Join(l.in.Dir(), file.Name))
		os.Remove(l.in.infoPath(file.Name))
		b.StartTimer()
	}
	b.ReportMetric((cpu()-c0).Seconds()/(float64(b.N)*size/1e9), "cpu-s/GB")
}

// TestHashMapped: hashing through a mapping gives the SHA-256 of the
// file, from any offset; a file truncated while it is hashed (its pages
// past the new end fault) ends in ErrChanged, not a crash.
func TestHashMapped(t *testing.T) {
	data := randomData(3*mapWindow+12345, 17)
	f, path := srcFile(t, data)
	for _, from := range []int64{0, 1, 4096, mapWindow + 7} {
		hs := sha256.New()
		hs.Write(data[:from])
		if err := hashRange(hs, f, from, int64(len(data)), make([]byte, hashChunk), nil); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(hs.Sum(nil)); got != sum(data) {
			t.Fatalf("from %d: hash differs", from)
		}
	}
	afterWindow = func() { os.Truncate(path, 1<<20) }
	defer func() { afterWindow = nil }()
	if _, err := hashMapped(sha256.New(), f, 0, int64(len(data)), nil); !errors.Is(err, ErrChanged) {
		t.Fatalf("truncated while hashed: %v", err)
	}
}
