package relayserver

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestQueueAccountingControlFrames: pongs and peer-gone notices pass through
// a session's queue like packets; once written they must no longer count
// against its queued bytes, or after enough pings the session drops every
// packet for good.
func TestQueueAccountingControlFrames(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed, QueueBytes: relay.MaxPacketSize})
	ca, cb := r.dial(a), r.dial(b)

	// More ping bytes than the whole queue may hold, in batches the queue
	// can take, each batch answered before the next.
	const batch = 64
	total := relay.MaxPacketSize/8 + 2*batch
	for sent := 0; sent < total; sent += batch {
		for i := range batch {
			var id [8]byte
			binary.BigEndian.PutUint64(id[:], uint64(sent+i))
			if err := ca.Ping(id); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < batch; {
			m, err := recvPacket(t, ca, 5*time.Second)
			if err != nil {
				t.Fatalf("after %d pings: %v", sent+got, err)
			}
			if m.Type == relay.MsgPong {
				got++
			}
		}
	}
	// Peer-gone notices go the same way: ask for a few absent peers.
	for range 8 {
		if err := ca.Send(nodeOf(genKey(t)), []byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		m, err := recvPacket(t, ca, 5*time.Second)
		if err != nil || m.Type != relay.MsgPeerGone {
			t.Fatalf("want a peer-gone notice, got %+v, %v", m, err)
		}
	}

	// A packet still passes, the largest one too.
	big := make([]byte, relay.MaxPacketSize)
	for _, pkt := range [][]byte{[]byte("still there?"), big} {
		if err := cb.Send(nodeOf(a), pkt); err != nil {
			t.Fatal(err)
		}
		m, err := recvPacket(t, ca, 5*time.Second)
		if err != nil || m.Type != relay.MsgPacket || m.Peer != nodeOf(b) || len(m.Data) != len(pkt) {
			t.Fatalf("want a %d-byte packet from b, got type %v len %d, %v (stats %+v)", len(pkt), m.Type, len(m.Data), err, r.srv.Stats())
		}
	}
	if st := r.srv.Stats(); st.DropsQueueFull != 0 {
		t.Fatalf("queue-full drops: %+v", st)
	}
	// And nothing is left counted once everything is written.
	wait.Until(t, "queued bytes back to 0", func() bool { return r.srv.lookup(nodeOf(a)).qlen.Load() == 0 })
}
