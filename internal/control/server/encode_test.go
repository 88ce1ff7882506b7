package server

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func testNode(t *testing.T, id uint64, user string) netmap.Node {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	a := netip.AddrFrom4([4]byte{100, 64, 0, byte(id)})
	n := netmap.Node{ID: id, Name: "node-" + string(rune('a'+id)), User: user, Key: pubkey.Node{PublicKey: k.PublicKey()},
		Addresses: []netip.Prefix{netip.PrefixFrom(a, 32)}, AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)},
		Online: id%2 == 0, LastSeen: time.Unix(1700000000+int64(id), 123).In(time.FixedZone("x", 3600))}
	if id%3 == 0 {
		n.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641"), netip.MustParseAddrPort("[2001:db8::1]:1")}
		n.Expiry = time.Unix(1800000000, 0)
	}
	return n
}

// The spliced encodings are byte for byte what proto.Encode produces.
func TestEncodeMatchesProto(t *testing.T) {
	users := []string{"alice", `"quoted" <b>&amp; "peers":[]`, "ünïcode\u2028"}
	for _, npeers := range []int{1, 2, 7} {
		s := &Server{opts: Options{Domain: "example.internal"}, world: &netmap.NetworkMap{}, enc: map[uint64][]byte{}}
		for i := 1; i <= npeers; i++ {
			s.world.Peers = append(s.world.Peers, testNode(t, uint64(i), users[i%len(users)]))
		}
		for _, self := range s.world.Peers {
			for _, v := range []uint64{1, 42} {
				got, found, err := s.encodeFullLocked(self.ID, v)
				if err != nil || !found {
					t.Fatalf("encodeFullLocked: %v %v", found, err)
				}
				m, _ := s.fullMapLocked(self.ID, v)
				want, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Full: m}})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("full map of %d peers, self %d:\n got %s\nwant %s", npeers, self.ID, got, want)
				}
				if _, err := proto.Decode(got[4:]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, found, _ := s.encodeFullLocked(999, 1); found {
			t.Fatal("found a node not in the world")
		}
	}

	on := true
	eps := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:9")}
	n := testNode(t, 5, users[1])
	for _, d := range []netmap.Delta{
		{PeersAdded: []netmap.Node{n}},
		{PeersRemoved: []uint64{3, 4}},
		{PeersChanged: []netmap.PeerChange{{ID: 2, Online: &on, Endpoints: &eps}}},
		{PeersAdded: []netmap.Node{n}, PeersRemoved: []uint64{9}, PeersChanged: []netmap.PeerChange{{ID: 2, Online: &on}}},
	} {
		tmpl, err := newDeltaTemplate(&d)
		if err != nil {
			t.Fatal(err)
		}
		if tmpl.rest == nil {
			t.Fatal("template without the expected prefix")
		}
		for _, v := range [][2]uint64{{1, 2}, {9, 10}, {123456789, 123456790}} {
			got, err := tmpl.encode(v[0], v[1])
			if err != nil {
				t.Fatal(err)
			}
			dd := d
			dd.From, dd.To = v[0], v[1]
			want, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Delta: &dd}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("delta:\n got %s\nwant %s", got, want)
			}
		}
	}
}

// A stream whose full map was built between two fanouts gets, at the next
// fanout, only what changed after its full map; every stream ends up with
// the world as it is.
func TestFanoutStartsFromFullMap(t *testing.T) {
	s := &Server{clk: clock.Real, opts: Options{Domain: "example.internal", QueueSize: 16}, world: &netmap.NetworkMap{},
		enc: map[uint64][]byte{}, dirty: map[uint64]*netmap.Node{}, sessions: map[uint64]*session{},
		fanKick: make(chan struct{}, 1)}
	for i := uint64(1); i <= 4; i++ {
		s.world.Peers = append(s.world.Peers, testNode(t, i, "alice"))
	}
	maps := map[uint64]*netmap.NetworkMap{}
	open := func(id uint64) { // what stream does under s.mu
		ss := &session{s: s, id: id, q: make(chan []byte, 16), done: make(chan struct{}), version: 1}
		ss.base = s.snapshotDirtyLocked()
		s.sessions[id] = ss
		maps[id], _ = s.fullMapLocked(id, 1)
	}
	change := func(id uint64, f func(n *netmap.Node)) {
		s.markDirtyLocked(id, s.world)
		n, _ := s.world.Peer(id)
		f(n)
	}
	eps := func(port uint16) func(n *netmap.Node) {
		return func(n *netmap.Node) {
			n.Endpoints = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), port)}
		}
	}
	open(1)
	change(2, eps(1))
	change(3, func(n *netmap.Node) { n.Online = !n.Online })
	s.markDirtyLocked(5, s.world) // node 5 joins
	s.world.Peers = append(s.world.Peers, testNode(t, 5, "bob"))
	open(2) // its full map has node 2's and 3's changes, and node 5
	change(2, eps(2))
	change(1, eps(3))
	s.fanoutLocked()
	open(3) // nothing pending: no base
	change(4, eps(4))
	s.fanoutLocked()
	if len(s.dirty) != 0 {
		t.Fatal("dirty not cleared")
	}
	for id, ss := range s.sessions {
		m := maps[id]
		for len(ss.q) > 0 {
			msg, err := proto.Decode((<-ss.q)[4:])
			if err != nil {
				t.Fatal(err)
			}
			if m, err = m.Apply(*msg.MapResponse.Delta); err != nil {
				t.Fatalf("stream %d: %v", id, err)
			}
		}
		want, _ := s.fullMapLocked(id, m.Version)
		if !m.Equal(want) {
			t.Errorf("stream %d: got %+v\nwant %+v", id, m, want)
		}
	}
}
