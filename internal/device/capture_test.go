package device

import (
	"bytes"
	"sync"
	"testing"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/wire"
)

// TestTap checks the capture tap: with it set, a ping shows up on the
// sender's tap as an outbound inner packet and a sealed outer message, and
// on the receiver's as the outer message and then the same plaintext
// inbound, each attributed to the right peer; removed, it sees nothing.
func TestTap(t *testing.T) {
	a, b := newPair(t, nil)
	ping(t, a, b, false) // handshake done
	type rec struct {
		outer, out bool
		peer       *Peer
		pkt        []byte
	}
	var mu sync.Mutex
	var got []rec
	tap := &Tap{
		Inner: func(out bool, p *Peer, pkt []byte) {
			mu.Lock()
			got = append(got, rec{false, out, p, bytes.Clone(pkt)})
			mu.Unlock()
		},
		Outer: func(out bool, p *Peer, ep conn.Endpoint, pkt []byte) {
			mu.Lock()
			got = append(got, rec{true, out, p, bytes.Clone(pkt)})
			mu.Unlock()
		},
	}
	a.dev.SetTap(tap)
	b.dev.SetTap(tap)
	ping(t, a, b, false)
	a.dev.SetTap(nil)
	b.dev.SetTap(nil)
	mu.Lock()
	seen := got
	got = nil
	mu.Unlock()
	pa, pb := a.dev.LookupPeer(b.pub()), b.dev.LookupPeer(a.pub())
	var innerOut, innerIn, outerOut, outerIn int
	var plainOut, plainIn []byte
	for _, r := range seen {
		switch {
		case !r.outer && r.out && r.peer == pa:
			innerOut++
			plainOut = r.pkt
		case !r.outer && !r.out && r.peer == pb:
			innerIn++
			plainIn = r.pkt
		case r.outer && r.out && r.peer == pa && len(r.pkt) > wire.MinTransportSize:
			outerOut++
		case r.outer && !r.out && r.peer == pb && len(r.pkt) > wire.MinTransportSize:
			outerIn++
		}
	}
	// ping sends a->b only: a's tap sees it leave, b's arrive.
	if innerOut == 0 || innerIn == 0 || outerOut == 0 || outerIn == 0 {
		t.Fatalf("tap saw inner out %d, inner in %d, outer out %d, outer in %d", innerOut, innerIn, outerOut, outerIn)
	}
	if !bytes.Equal(plainOut, plainIn) {
		t.Fatalf("plaintext captured on send %x differs from plaintext delivered %x", plainOut, plainIn)
	}
	ping(t, a, b, false)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Fatalf("removed tap still saw %d packets", len(got))
	}
	sa, _ := a.dev.PeerStats(b.pub())
	sb, _ := b.dev.PeerStats(a.pub())
	if sa.TxPackets < 3 || sb.RxPackets < 3 {
		t.Fatalf("packet counters: a sent %d, b received %d; want at least 3 (one per ping)", sa.TxPackets, sb.RxPackets)
	}
}
