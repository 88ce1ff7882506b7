package drop

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// gateReader is an upload body that notes its first read, then blocks
// until released and fails like a cut connection.
type gateReader struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func newGate() *gateReader {
	return &gateReader{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateReader) Read(p []byte) (int, error) {
	g.once.Do(func() { close(g.started) })
	<-g.release
	return 0, errors.New("link cut")
}

// upload is a Receive running in the background.
type upload struct {
	gate *gateReader
	done chan error
}

// startUpload starts receiving h from sender addr with a gated body and
// waits until the inbox either reads the body (accepted: true) or refuses
// the upload (its error).
func startUpload(t *testing.T, in *Inbox, h Header, addr string) (*upload, bool, error) {
	t.Helper()
	u := &upload{gate: newGate(), done: make(chan error, 1)}
	t.Cleanup(u.stop)
	go func() {
		_, err := in.Receive(h, 0, u.gate, Sender{Name: addr, User: "alice", Addr: addr}, func() {}, nil)
		u.done <- err
	}()
	select {
	case <-u.gate.started:
		return u, true, nil
	case err := <-u.done:
		u.done <- err
		return u, false, err
	case <-time.After(10 * time.Second):
		t.Fatalf("upload of %s from %s neither read nor refused", h.Name, addr)
	}
	return nil, false, nil
}

// stop cuts the upload and waits for its end.
func (u *upload) stop() {
	select {
	case <-u.gate.release:
	default:
		close(u.gate.release)
	}
	<-u.done
	u.done <- nil
}

func sized(name string, n int64) Header {
	return Header{Name: name, Size: n, ID: fmt.Sprintf("%032x", n)}
}

// TestQuotaConcurrentUploads: uploads that start together cannot all pass
// the quota check before any of them counts: the quota is reserved
// atomically, so of many uploads that each fit alone but not two together,
// exactly one is accepted.
func TestQuotaConcurrentUploads(t *testing.T) {
	in, err := NewInbox(t.TempDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	const n = 15                                     // distinct senders, under every transfer cap
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(16)) // let them overlap
	type result struct {
		u        *upload
		accepted bool
		err      error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			u, ok, err := startUpload(t, in, sized(fmt.Sprintf("f%d", i), 60), fmt.Sprintf("100.64.0.%d", i+1))
			results <- result{u, ok, err}
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	accepted := 0
	for r := range results {
		switch {
		case r.accepted:
			accepted++
		case !errors.Is(r.err, ErrQuota):
			t.Errorf("refused with %v, want the quota error", r.err)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d uploads of 60 bytes accepted at once under a quota of 100, want 1", accepted)
	}
}

// TestQuotaEmptyPartial: an upload that declares a huge size and sends
// nothing does not keep that size reserved once it has ended: a partial
// file counts what it holds, and only a transfer in progress reserves what
// it declared.
func TestQuotaEmptyPartial(t *testing.T) {
	in, err := NewInbox(t.TempDir(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	from := Sender{Name: "a", User: "alice", Addr: "100.64.0.1"}
	_, err = in.Receive(sized("huge", 1000), 0, bytes.NewReader(nil), from, func() {}, nil)
	if err == nil {
		t.Fatal("an empty body completed a 1000-byte file")
	}
	data := randomData(600, 9)
	if _, err := in.Receive(header("real", data), 0, bytes.NewReader(data), from, func() {}, nil); err != nil {
		t.Fatalf("after an empty upload declaring the whole quota: %v", err)
	}
	// The empty partial still resumes, within what is left.
	if _, err := in.Receive(sized("huge", 1000), 0, bytes.NewReader(nil), from, func() {}, nil); !errors.Is(err, ErrQuota) {
		t.Fatalf("resuming the huge upload past the quota: %v", err)
	}
}

// TestTransferCaps: each upload holds buffers of its own, so a sender may
// run only a few at once and all senders together a bounded number; extra
// ones are refused at once with 429, without reading their bodies.
func TestTransferCaps(t *testing.T) {
	const perSender, total = 4, 16 // MaxTransfersPerSender, MaxTransfers
	in, err := NewInbox(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	refusedTooMany := func(ok bool, err error, what string) {
		t.Helper()
		if ok {
			t.Fatalf("%s: accepted", what)
		}
		if s := errStatus(err); s != http.StatusTooManyRequests {
			t.Fatalf("%s: status %d (%v), want 429", what, s, err)
		}
	}
	var ups []*upload
	for i := range perSender {
		u, ok, err := startUpload(t, in, sized(fmt.Sprintf("a%d", i), 10), "100.64.0.1")
		if !ok {
			t.Fatalf("upload %d of one sender: %v", i, err)
		}
		ups = append(ups, u)
	}
	_, ok, err := startUpload(t, in, sized("a-extra", 10), "100.64.0.1")
	refusedTooMany(ok, err, "one upload more from the same sender")
	for i := perSender; i < total; i++ {
		u, ok, err := startUpload(t, in, sized(fmt.Sprintf("b%d", i), 10), fmt.Sprintf("100.64.1.%d", i))
		if !ok {
			t.Fatalf("upload %d in all: %v", i, err)
		}
		ups = append(ups, u)
	}
	_, ok, err = startUpload(t, in, sized("c-extra", 10), "100.64.2.1")
	refusedTooMany(ok, err, "one upload more in all")
	// Once one ends, its sender may start another.
	ups[0].stop()
	if _, ok, err := startUpload(t, in, sized("a-later", 10), "100.64.0.1"); !ok {
		t.Fatalf("after one ended: %v", err)
	}
}
