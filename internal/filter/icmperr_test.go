package filter

import (
	"net/netip"
	"testing"
)

// TestICMPErrorFromFlowPeerOnly: an ICMP error quoting a recorded flow is
// accepted only from the peer that flow was sent to (the engine has
// checked that the error's outer source lies in that peer's allowed IPs:
// the destination itself, or a router behind an exit node or subnet
// router). Another member cannot inject "unreachable" or "fragmentation
// needed" into a flow to someone else, whatever addresses it quotes.
func TestICMPErrorFromFlowPeerOnly(t *testing.T) {
	const peerV, peerM = 7, 9 // the flow's peer, another member
	for _, fam := range []struct{ me, peer, other, router string }{
		{me4, peer4, other4, "198.51.100.1"}, {me6, peer6, other6, "2001:db8::1"},
	} {
		f, _ := newTest(t, `{"rules":[]}`)
		icmp, unreach, echoReq := uint8(ProtoICMP), uint16(3), uint16(8)
		if netip.MustParseAddr(fam.me).Is6() {
			icmp, unreach, echoReq = ProtoICMPv6, 1, 128
		}
		out := []([]byte){
			pkt(fam.me, fam.peer, ProtoUDP, 5353, 53, 0, nil),
			pkt(fam.me, fam.peer, ProtoTCP, 40000, 443, tcpSYN, nil),
			pkt(fam.me, fam.peer, icmp, echoReq, 77, 0, nil),
		}
		for _, o := range out {
			f.RecordTo(o, peerV)
		}
		for _, quoted := range out {
			// From the flow's peer: its own address, or a router behind it.
			for _, src := range []string{fam.peer, fam.router} {
				if !f.AllowFrom(pkt(src, fam.me, icmp, unreach, 0, 0, quoted), peerV) {
					t.Errorf("%s: error from %s via the flow's peer refused", fam.me, src)
				}
			}
			// From another member: from its own address, or forging the
			// flow's destination or a router as the outer source.
			for _, src := range []string{fam.other, fam.peer, fam.router} {
				if f.AllowFrom(pkt(src, fam.me, icmp, unreach, 0, 0, quoted), peerM) {
					t.Errorf("%s: error from %s sent by another peer accepted", fam.me, src)
				}
			}
		}
		// Replies themselves are not affected.
		if !f.AllowFrom(pkt(fam.peer, fam.me, ProtoUDP, 53, 5353, 0, nil), peerV) {
			t.Errorf("%s: udp reply refused", fam.me)
		}
	}
}

func TestAllowFromDoesNotAllocate(t *testing.T) {
	f := New(0)
	f.Set(&Spec{})
	out := pkt(me4, peer4, ProtoUDP, 1, 53, 0, nil)
	icmpErr := pkt(peer4, me4, ProtoICMP, 3, 0, 0, out)
	if n := testing.AllocsPerRun(1000, func() {
		f.RecordTo(out, 3)
		f.AllowFrom(icmpErr, 3)
		f.AllowFrom(icmpErr, 4)
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}
