package relayserver

import (
	"io"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// benchClient is a registered session with no connection, for driving
// the forward path directly.
func benchClient(tb testing.TB, s *Server) *client {
	c := &client{s: s, key: pubkey.Node{PublicKey: genKey(tb).PublicKey()}, wake: make(chan struct{}, 1),
		closing: make(chan byte, 1), done: make(chan struct{})}
	if !s.register(c) {
		tb.Fatal("register")
	}
	return c
}

// BenchmarkForward is the relay's per-packet work between reading a send
// frame and writing the receive frame: rate check, lookup, copy into a
// pooled buffer, queue, and the writer's framing into its batch (flushed
// to io.Discard, as a full batch is to the session). 0 allocs/op.
func BenchmarkForward(b *testing.B) {
	s, err := NewServer(Options{Key: genKey(b), Allowed: func(pubkey.Node) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	from, to := benchClient(b, s), benchClient(b, s)
	frame := append(append([]byte(nil), to.key.PublicKey[:]...), make([]byte, 1420)...)
	bw := &batchWriter{w: io.Discard}
	var st sendState
	var batch []item
	b.ReportAllocs()
	b.SetBytes(1420)
	for b.Loop() {
		if err := from.handleSend(&st, frame); err != nil {
			b.Fatal(err)
		}
		<-to.wake
		batch = to.take(batch)
		for i, it := range batch {
			if err := to.writeItem(bw, it); err != nil {
				b.Fatal(err)
			}
			batch[i] = item{}
		}
	}
	if st := s.Stats(); st.PacketsOut == 0 || st.DropsQueueFull != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// TestForwardReusesBuffers: forwarding does not allocate per packet once
// the pool is warm (the benchmark's claim, checked in every test run).
func TestForwardReusesBuffers(t *testing.T) {
	s, err := NewServer(Options{Key: genKey(t), Allowed: func(pubkey.Node) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	from, to := benchClient(t, s), benchClient(t, s)
	frame := append(append([]byte(nil), to.key.PublicKey[:]...), make([]byte, 1420)...)
	bw := &batchWriter{w: io.Discard}
	var st sendState
	var batch []item
	allocs := testing.AllocsPerRun(1000, func() {
		from.handleSend(&st, frame)
		<-to.wake
		batch = to.take(batch)
		for i, it := range batch {
			to.writeItem(bw, it)
			batch[i] = item{}
		}
	})
	// sync.Pool may drop its items at a GC during the run.
	if allocs > 0.1 {
		t.Fatalf("%.2f allocations per forwarded packet; want 0", allocs)
	}
	if got := s.Stats().PacketsOut; got < 1000 {
		t.Fatalf("%d packets out", got)
	}
}
