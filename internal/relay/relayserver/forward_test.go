package relayserver

import (
	"io"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
)

// benchClient is a registered session with no connection, for driving
// the forward path directly.
func benchClient(tb testing.TB, s *Server) *client {
	c := &client{s: s, key: genKey(tb).PublicKey(), queue: make(chan item, s.o.QueuePackets),
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
	s, err := NewServer(Options{Key: genKey(b), Allowed: func(noise.PublicKey) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	from, to := benchClient(b, s), benchClient(b, s)
	frame := append(append([]byte(nil), to.key[:]...), make([]byte, 1420)...)
	bw := &batchWriter{w: io.Discard}
	var st sendState
	b.ReportAllocs()
	b.SetBytes(1420)
	for b.Loop() {
		if err := from.handleSend(&st, frame); err != nil {
			b.Fatal(err)
		}
		it := <-to.queue
		to.qlen.Add(-int64(len(it.data)))
		if err := to.writeItem(bw, it); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.PacketsOut == 0 || st.DropsQueueFull != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// TestForwardReusesBuffers: forwarding does not allocate per packet once
// the pool is warm (the benchmark's claim, checked in every test run).
func TestForwardReusesBuffers(t *testing.T) {
	s, err := NewServer(Options{Key: genKey(t), Allowed: func(noise.PublicKey) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	from, to := benchClient(t, s), benchClient(t, s)
	frame := append(append([]byte(nil), to.key[:]...), make([]byte, 1420)...)
	bw := &batchWriter{w: io.Discard}
	var st sendState
	allocs := testing.AllocsPerRun(1000, func() {
		from.handleSend(&st, frame)
		it := <-to.queue
		to.qlen.Add(-int64(len(it.data)))
		to.writeItem(bw, it)
	})
	// sync.Pool may drop its items at a GC during the run.
	if allocs > 0.1 {
		t.Fatalf("%.2f allocations per forwarded packet; want 0", allocs)
	}
	if got := s.Stats().PacketsOut; got < 1000 {
		t.Fatalf("%d packets out", got)
	}
}
