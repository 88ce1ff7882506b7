package magicsock_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/udp"
)

// stalledRelay is a relay whose writes hang until released, as a relay
// connection does when its TCP path stalls.
type stalledRelay struct {
	release chan struct{}
	once    sync.Once
	sent    atomic.Int64
}

func (r *stalledRelay) Send(dst pubkey.Node, pkt []byte) error {
	<-r.release
	r.sent.Add(1)
	return nil
}

// A stalled relay never blocks Send: packets queue up to a bound, the rest
// are dropped and counted, and the queued ones go once the relay moves.
func TestRelaySendNeverBlocks(t *testing.T) {
	ms := magicsock.New(udp.New(), magicsock.Options{DiscoKey: genKey(t)})
	if _, _, err := ms.Open(0); err != nil {
		t.Fatal(err)
	}
	r := &stalledRelay{release: make(chan struct{})}
	t.Cleanup(func() { r.once.Do(func() { close(r.release) }); ms.Close() })
	ms.SetRelay(r)
	peer := nodeKeyOf(genKey(t))
	ms.SetPeers([]magicsock.PeerInfo{{Key: peer}}) // no address: relay only
	ep, err := ms.ParseEndpoint(magicsock.PeerEndpoint(peer))
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 1400)
	const total = 5000
	// The relay stays stalled until released below: the sends return only
	// if none waits for it.
	var sent atomic.Int64
	go func() {
		for i := 0; i < total; i++ {
			ms.Send([][]byte{pkt}, ep)
			sent.Add(1)
		}
	}()
	wait.Until(t, "all sends returned while the relay is stalled", func() bool { return sent.Load() == total })
	dropped := ms.Stats.RelaySendDrops.Load()
	if dropped == 0 || dropped >= total {
		t.Fatalf("%d of %d dropped; want some queued and the rest dropped", dropped, total)
	}
	r.once.Do(func() { close(r.release) })
	// RelaySent counts a packet once the relay's Send has returned, after
	// the relay counted it: wait for both.
	wait.For(t, 5*time.Second, "queued packets relayed", func() bool {
		return r.sent.Load() == total-int64(dropped) && ms.Stats.RelaySent.Load() == uint64(total)-dropped
	})
	if got, sent := ms.Stats.RelaySent.Load(), r.sent.Load(); got != uint64(total)-dropped || sent != total-int64(dropped) {
		t.Fatalf("RelaySent %d, relay got %d, want %d", got, sent, uint64(total)-dropped)
	}
}

// batchingRelay records the batches the layer hands a BatchRelay; its
// first write hangs until released, so packets queue up behind it.
type batchingRelay struct {
	release chan struct{}
	mu      sync.Mutex
	batches []int
	got     [][]byte
}

func (r *batchingRelay) Send(dst pubkey.Node, pkt []byte) error {
	return r.SendBatch([]pubkey.Node{dst}, [][]byte{pkt})
}

func (r *batchingRelay) SendBatch(dsts []pubkey.Node, pkts [][]byte) error {
	<-r.release
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, len(pkts))
	for _, p := range pkts {
		r.got = append(r.got, append([]byte(nil), p...))
	}
	return nil
}

// Packets that queue up for a BatchRelay go out as batches (one write to
// the relay session each), whole and in order, none lost.
func TestRelaySendsBatches(t *testing.T) {
	ms := magicsock.New(udp.New(), magicsock.Options{DiscoKey: genKey(t)})
	if _, _, err := ms.Open(0); err != nil {
		t.Fatal(err)
	}
	r := &batchingRelay{release: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(r.release) }); ms.Close() })
	ms.SetRelay(r)
	peer := nodeKeyOf(genKey(t))
	ms.SetPeers([]magicsock.PeerInfo{{Key: peer}}) // no address: relay only
	ep, err := ms.ParseEndpoint(magicsock.PeerEndpoint(peer))
	if err != nil {
		t.Fatal(err)
	}
	const total = 200 // fits the send queue: none dropped
	for i := range total {
		pkt := make([]byte, 1400)
		pkt[0], pkt[1] = byte(i>>8), byte(i)
		ms.Send([][]byte{pkt}, ep)
	}
	once.Do(func() { close(r.release) })
	wait.For(t, 5*time.Second, "every packet relayed", func() bool { return ms.Stats.RelaySent.Load() == total })
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.got {
		if len(p) != 1400 || int(p[0])<<8|int(p[1]) != i {
			t.Fatalf("packet %d: %d bytes, number %d", i, len(p), int(p[0])<<8|int(p[1]))
		}
	}
	if len(r.got) != total || len(r.batches) >= total/4 {
		t.Fatalf("%d packets in %d batches %v; want %d in few batches", len(r.got), len(r.batches), r.batches, total)
	}
}
