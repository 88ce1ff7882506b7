package tun

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestMergerPieces: a flow's segments merged by Merger and gathered from
// Pieces are whole packets (lengths and IPv4 header checksum right) whose
// payloads, in order, are the flow's; the batch's packet count shrinks.
func TestMergerPieces(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		pkts := tcpFlow(v6, 60, 1200, nil)
		var want []byte
		bufs := make([][]byte, len(pkts))
		for i, p := range pkts {
			hl := headerLen(p)
			want = append(want, p[hl:]...)
			bufs[i] = append(make([]byte, offset), p...)
		}
		var m Merger
		n := m.Plan(bufs, offset)
		if n >= len(pkts) || n < 2 {
			t.Fatalf("v6=%v: %d segments planned as %d packets", v6, len(pkts), n)
		}
		var got []byte
		segs := 0
		for k := range n {
			_, length, s := m.Packet(k)
			segs += s
			var pkt []byte
			for _, piece := range m.Pieces(nil, bufs, offset, k) {
				pkt = append(pkt, piece...)
			}
			if len(pkt) != length || length > maxPacketLen {
				t.Fatalf("v6=%v: packet %d: %d bytes gathered, length %d", v6, k, len(pkt), length)
			}
			if v6 {
				if int(binary.BigEndian.Uint16(pkt[4:]))+ipv6HeaderLen != len(pkt) {
					t.Fatalf("packet %d: IPv6 payload length wrong", k)
				}
			} else if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || !ipv4HeaderValid(pkt[:ipv4HeaderLen]) {
				t.Fatalf("packet %d: IPv4 total length or header checksum wrong", k)
			}
			got = append(got, pkt[headerLen(pkt):]...)
		}
		if segs != len(pkts) || !bytes.Equal(got, want) {
			t.Fatalf("v6=%v: %d segments in %d packets; payload intact: %v", v6, segs, n, bytes.Equal(got, want))
		}
	}
}

// headerLen is the IP and TCP header length of pkt.
func headerLen(pkt []byte) int {
	ip := ipv4HeaderLen
	if pkt[0]>>4 == 6 {
		ip = ipv6HeaderLen
	}
	return ip + int(pkt[ip+12]>>4)*4
}
