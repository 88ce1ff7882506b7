package netmap

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// gen builds random but valid maps for property tests.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) *gen { return &gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

func (g *gen) key() noise.PublicKey {
	var k noise.PublicKey
	for i := range k {
		k[i] = byte(g.r.UintN(256))
	}
	k[0] |= 1 // never zero
	return k
}

func (g *gen) time() time.Time {
	if g.r.IntN(4) == 0 {
		return time.Time{}
	}
	locs := []*time.Location{time.UTC, time.FixedZone("x", 3600), time.Local}
	return time.Unix(1.7e9+g.r.Int64N(1e8), g.r.Int64N(1e9)).In(locs[g.r.IntN(len(locs))])
}

func (g *gen) node(id uint64) Node {
	v := byte(g.r.UintN(250) + 1)
	n := Node{
		ID:     id,
		Name:   fmt.Sprintf("n%d", id),
		User:   []string{"alice", "bob", ""}[g.r.IntN(3)],
		Key:    pubkey.Node{PublicKey: g.key()},
		Online: g.r.IntN(2) == 0,
	}
	if g.r.IntN(3) == 0 {
		n.Name = fmt.Sprintf("host-%d-%d", id, g.r.IntN(100))
	}
	// Addresses are unique per ID: 100.64.<id>.<v> and fd00::<id>:<v>.
	a4 := netip.AddrFrom4([4]byte{100, 64 + byte(id>>8), byte(id), v})
	a6 := netip.AddrFrom16([16]byte{0: 0xfd, 12: byte(id >> 8), 13: byte(id), 15: v})
	switch g.r.IntN(4) {
	case 0:
	case 1:
		n.Addresses = []netip.Prefix{netip.PrefixFrom(a4, 32)}
	default:
		n.Addresses = []netip.Prefix{netip.PrefixFrom(a4, 32), netip.PrefixFrom(a6, 128)}
	}
	n.AllowedIPs = slices.Clone(n.Addresses)
	if g.r.IntN(4) == 0 {
		n.AllowedIPs = append(n.AllowedIPs, netip.MustParsePrefix("10.0.0.0/8"))
	}
	for range g.r.IntN(3) {
		n.Endpoints = append(n.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(g.r.UintN(256))}), uint16(g.r.UintN(65535)+1)))
	}
	n.LastSeen, n.Expiry = g.time(), g.time()
	if g.r.IntN(2) == 0 {
		n.DiscoKey = pubkey.Disco{PublicKey: fresh32(g)}
	}
	n.Routes = g.routes()
	if g.r.IntN(3) == 0 {
		n.Via = uint64(g.r.UintN(8) + 1) // a WireGuard-only member
		if g.r.IntN(2) == 0 {
			n.Traffic = Traffic{RxBytes: g.r.Uint64N(1 << 40), TxBytes: g.r.Uint64N(1 << 40), At: g.time()}
		}
	}
	return n
}

// routes is nil, a subnet, or a subnet and the default routes (an exit node).
func (g *gen) routes() []netip.Prefix {
	switch g.r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(g.r.UintN(256)), 0, 0}), 16)}
	}
	return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("192.168.1.0/24")}
}

func fresh32(g *gen) noise.PublicKey {
	var k noise.PublicKey
	for i := range k {
		k[i] = byte(g.r.UintN(256))
	}
	return k
}

// mutate changes a few fields of n, keeping it valid and its ID.
func (g *gen) mutate(n Node) Node {
	fresh := g.node(n.ID)
	out := n.Clone()
	for range g.r.IntN(4) + 1 {
		switch g.r.IntN(13) {
		case 0:
			out.Name = fresh.Name
		case 1:
			out.User = fresh.User
		case 2:
			out.Key = fresh.Key
		case 3:
			out.Addresses = fresh.Addresses
		case 4:
			out.AllowedIPs = fresh.AllowedIPs
		case 5:
			out.Endpoints = fresh.Endpoints
		case 6:
			out.Online = !out.Online
		case 7:
			out.LastSeen = fresh.LastSeen
		case 8:
			out.Expiry = fresh.Expiry
		case 9:
			out.DiscoKey = pubkey.Disco{PublicKey: fresh32(g)}
		case 10:
			out.Routes = g.routes()
		case 11:
			out.Via = fresh.Via
		case 12:
			out.Traffic = fresh.Traffic
		}
	}
	return out
}

func (g *gen) dns() DNSConfig {
	var c DNSConfig
	for range g.r.IntN(3) {
		c.Nameservers = append(c.Nameservers, netip.AddrFrom4([4]byte{100, 100, 100, byte(g.r.UintN(256))}))
	}
	for range g.r.IntN(3) {
		c.SearchDomains = append(c.SearchDomains, fmt.Sprintf("d%d.example", g.r.IntN(5)))
	}
	return c
}

func (g *gen) filter() json.RawMessage {
	switch g.r.IntN(3) {
	case 0:
		return nil
	case 1:
		return json.RawMessage(fmt.Sprintf(`{"allow": [ %d ]}`, g.r.IntN(3)))
	}
	return json.RawMessage(`[]`)
}

func (g *gen) netmap(version uint64) *NetworkMap {
	m := &NetworkMap{Version: version, Self: g.node(1000), Domain: "warren.internal", DNS: g.dns(), PacketFilter: g.filter()}
	for id := uint64(1); id <= 40; id++ {
		if g.r.IntN(3) == 0 {
			m.Peers = append(m.Peers, g.node(id))
		}
	}
	return m
}

// evolve returns a valid successor of m: peers removed, added, changed,
// and the other fields sometimes replaced.
func (g *gen) evolve(m *NetworkMap) *NetworkMap {
	n := m.Clone()
	n.Version = m.Version + 1 + g.r.Uint64N(3)
	if g.r.IntN(4) == 0 {
		n.Self = g.mutate(n.Self)
	}
	have := map[uint64]bool{}
	var peers []Node
	for _, p := range n.Peers {
		switch g.r.IntN(6) {
		case 0: // removed
		case 1, 2:
			peers = append(peers, g.mutate(p))
			have[p.ID] = true
		default:
			peers = append(peers, p)
			have[p.ID] = true
		}
	}
	for id := uint64(1); id <= 40; id++ {
		if !have[id] && g.r.IntN(8) == 0 {
			peers = append(peers, g.node(id))
		}
	}
	slices.SortFunc(peers, func(a, b Node) int { return cmpU64(a.ID, b.ID) })
	n.Peers = peers
	if g.r.IntN(5) == 0 {
		n.Domain = []string{"warren.internal", "corp.example", ""}[g.r.IntN(3)]
	}
	if g.r.IntN(5) == 0 {
		n.DNS = g.dns()
	}
	if g.r.IntN(5) == 0 {
		n.PacketFilter = g.filter()
	}
	return n
}
