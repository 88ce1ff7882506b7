package magicsock

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func discoKeys(t testing.TB) (a, b noise.PrivateKey) {
	var err error
	if a, err = noise.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	if b, err = noise.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestDiscoRoundTrip(t *testing.T) {
	a, b := discoKeys(t)
	ab, ba := sharedKey(a, discoOf(b)), sharedKey(b, discoOf(a))
	msgs := []discoMsg{
		{typ: msgPing, tx: txID{1, 2, 3}, nodeKey: pubkey.Node{PublicKey: noise.PublicKey{9, 9}}},
		{typ: msgPing, tx: txID{1, 2, 4}, nodeKey: pubkey.Node{PublicKey: noise.PublicKey{9, 8}}, clock: 1<<40 + 7},
		{typ: msgPong, tx: txID{4}, observed: netip.MustParseAddrPort("198.18.0.7:41641")},
		{typ: msgPong, tx: txID{5}, observed: netip.MustParseAddrPort("[fd00::7]:1")},
		{typ: msgCallMeMaybe, addrs: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:2"), netip.MustParseAddrPort("[fd00::1]:3")}},
	}
	for _, m := range msgs {
		pkt := seal(discoOf(a), ab, &m)
		if !isDisco(pkt) || senderKey(pkt) != discoOf(a) {
			t.Fatalf("%+v: header", m)
		}
		got, err := open(pkt, ba)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if got.typ != m.typ || got.tx != m.tx || got.nodeKey != m.nodeKey || got.clock != m.clock || got.observed != m.observed || len(got.addrs) != len(m.addrs) {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
		// Any flipped byte after the header fails authentication.
		for i := discoHeaderLen; i < len(pkt); i++ {
			bad := bytes.Clone(pkt)
			bad[i] ^= 0x40
			if _, err := open(bad, ba); err == nil {
				t.Fatalf("byte %d flipped: accepted", i)
			}
		}
		// Another key pair cannot open it.
		c, _ := discoKeys(t)
		if _, err := open(pkt, sharedKey(c, discoOf(a))); err == nil {
			t.Fatal("opened with the wrong key")
		}
	}
	// A WireGuard message is never taken for a disco one.
	for typ := byte(1); typ <= 4; typ++ {
		wg := make([]byte, 148)
		wg[0] = typ
		if isDisco(wg) {
			t.Fatalf("WireGuard type %d classified as disco", typ)
		}
	}
}

// FuzzDisco feeds arbitrary bytes to the probe parsers: the payload parser
// and the packet opener (with a fixed key) must never panic, and whatever
// parses must encode back to the same payload.
func FuzzDisco(f *testing.F) {
	a, b := discoKeys(f)
	ab, ba := sharedKey(a, discoOf(b)), sharedKey(b, discoOf(a))
	for _, m := range []discoMsg{
		{typ: msgPing, tx: txID{1}},
		{typ: msgPing, tx: txID{2}, clock: 12345},
		{typ: msgPong, observed: netip.MustParseAddrPort("198.18.0.7:41641")},
		{typ: msgCallMeMaybe, addrs: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:2")}},
	} {
		f.Add(m.encode(nil))
		f.Add(seal(discoOf(a), ab, &m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parseDisco(b); err == nil && m.typ != msgCallMeMaybe {
			if enc := m.encode(nil); !bytes.Equal(enc, b) {
				t.Fatalf("re-encoding %x gave %x", b, enc)
			}
		}
		isDisco(b)
		open(b, ba)
	})
}
