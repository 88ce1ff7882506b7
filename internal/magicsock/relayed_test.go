package magicsock_test

import (
	"sync/atomic"
	"testing"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/udp"
)

// TestRelayReceiveWaitsForEngine: packets the relay delivers while the
// engine is behind wait (and the relay connection's reader with them)
// instead of being dropped, and all reach the engine once it reads;
// closing the layer releases a waiting reader, dropping its packet.
func TestRelayReceiveWaitsForEngine(t *testing.T) {
	ms := magicsock.New(udp.New(), magicsock.Options{DiscoKey: genKey(t)})
	fns, _, err := ms.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	peer := nodeKeyOf(genKey(t))
	ms.SetPeers([]magicsock.PeerInfo{{Key: peer}})
	recv := fns[len(fns)-1] // the relayed packets' receive function

	pkt := make([]byte, 200)
	const total = 3000 // far more than the layer queues
	var handed atomic.Int64
	go func() {
		for range total {
			ms.ReceiveRelayed(peer, pkt)
			handed.Add(1)
		}
	}()
	wait.Until(t, "the relay's reader waiting for the engine", func() bool { return ms.Stats.RelayWaits.Load() > 0 })
	if n := handed.Load(); n == total {
		t.Fatalf("all %d packets taken with no engine reading", n)
	}
	bufs, sizes, eps := make([][]byte, 64), make([]int, 64), make([]conn.Endpoint, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	got := 0
	for got < total {
		n, err := recv(bufs, sizes, eps)
		if err != nil {
			t.Fatalf("after %d packets: %v", got, err)
		}
		got += n
	}
	if d := ms.Stats.RelayDrops.Load(); d != 0 {
		t.Fatalf("%d packets dropped", d)
	}

	// The engine stops reading; then the layer closes under a waiting reader.
	done := make(chan struct{})
	waits := ms.Stats.RelayWaits.Load()
	go func() {
		defer close(done)
		for range total {
			ms.ReceiveRelayed(peer, pkt)
		}
	}()
	wait.Until(t, "the reader waiting again", func() bool { return ms.Stats.RelayWaits.Load() > waits })
	ms.Close()
	<-done // every later packet is dropped at once
	if d := ms.Stats.RelayDrops.Load(); d == 0 {
		t.Fatal("no packet dropped once the layer closed")
	}
}
