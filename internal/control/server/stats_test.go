package server_test

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
)

// TestStats checks the counters behind the server's metrics: streams
// online, full maps and deltas queued, and the latency histograms.
func TestStats(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse)
	// Alpha's stream is up before bravo joins, so bravo reaches it as a
	// delta (under load, a stream still starting would get bravo in its
	// full map instead).
	a.waitMap("its full map", pushWait, func(*netmap.NetworkMap) bool { return true })
	b := e.join("bravo", e.reuse)
	a.waitMap("bravo", pushWait, hasPeers(b))
	b.waitMap("alpha", pushWait, hasPeers(a))
	count := func(l server.Latency) (n uint64) {
		for _, c := range l.Counts {
			n += c
		}
		return n
	}
	// A write's latency is recorded once Write returns, after the node may
	// have read what it wrote: wait for the histograms too.
	var st server.Stats
	deadline := time.Now().Add(pushWait)
	for {
		st = e.srv.Stats()
		if st.NodesOnline == 2 && st.FullMapsSent >= 2 && st.DeltasSent >= 1 && count(st.StreamWrite) >= 3 && count(st.StoreRead) >= 1 ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.NodesOnline != 2 || st.FullMapsSent < 2 || st.DeltasSent < 1 {
		t.Fatalf("online %d, full maps %d, deltas %d; want 2, >= 2, >= 1 (alpha learns of bravo by a delta)", st.NodesOnline, st.FullMapsSent, st.DeltasSent)
	}
	if len(st.StreamWrite.Counts) != len(server.LatencyBuckets)+1 || count(st.StreamWrite) < 3 || st.StreamWrite.Sum <= 0 {
		t.Fatalf("stream write histogram %+v", st.StreamWrite)
	}
	if count(st.StoreRead) < 1 || st.StoreRead.Sum <= 0 {
		t.Fatalf("store read histogram %+v", st.StoreRead)
	}
	b.stop()
	deadline = time.Now().Add(pushWait)
	for e.srv.Stats().NodesOnline != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.srv.Stats().NodesOnline; n != 1 {
		t.Fatalf("%d nodes online after bravo left, want 1", n)
	}
}
