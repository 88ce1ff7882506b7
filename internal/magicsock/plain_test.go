package magicsock_test

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// countingRelay counts what the layer hands the relay.
type countingRelay struct{ n atomic.Int64 }

func (r *countingRelay) Send(pubkey.Node, []byte) error { r.n.Add(1); return nil }

// A plain peer (a stock WireGuard device behind a gateway): the gateway
// learns its address from its authenticated packets, answers there, follows
// it when it roams, and never sends it through the relay.
func TestPlainPeerRoams(t *testing.T) {
	gw := newNode(t, 1)
	relay := &countingRelay{}
	gw.ms.SetRelay(relay)
	// The phone: the engine on a plain UDP socket, as stock WireGuard.
	phone := &node{t: t, key: genKey(t), tun: tuntest.New(1420), addr: netip.AddrFrom4([4]byte{100, 64, 0, 2})}
	phone.dev = device.New(phone.tun, udp.New(), device.Options{})
	t.Cleanup(phone.dev.Close)
	port := uint16(0)
	if err := phone.dev.Apply(&uapi.Config{PrivateKey: &phone.key, ListenPort: &port, Peers: []uapi.PeerConfig{{
		PublicKey: gw.key.PublicKey(), Endpoint: gw.udpAddr().String(),
		ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")},
	}}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "phone up", func() bool { return phone.dev.Port() != 0 })

	gw.ms.SetPeers([]magicsock.PeerInfo{{Key: nodeKeyOf(phone.key), Plain: true}})
	if err := gw.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{{
		PublicKey: phone.key.PublicKey(), Endpoint: magicsock.PeerEndpoint(nodeKeyOf(phone.key)),
		ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{netip.PrefixFrom(phone.addr, 32)},
	}}}); err != nil {
		t.Fatal(err)
	}
	// Nothing heard yet: no path, and nothing for the relay.
	if send(gw, phone, 200*time.Millisecond) {
		t.Fatal("the gateway reached the phone before hearing from it")
	}
	flow(t, phone, gw, 5*time.Second)
	flow(t, gw, phone, 5*time.Second)
	if p := gw.ms.PeerPath(nodeKeyOf(phone.key)); p.Kind != magicsock.PathPlain || p.Addr.Port() != phone.dev.Port() {
		t.Fatalf("path to the phone %+v, want wireguard at port %d", p, phone.dev.Port())
	}

	// The phone moves to another port; its next packets move the gateway.
	newPort := uint16(0)
	old := phone.dev.Port()
	if err := phone.dev.Apply(&uapi.Config{ListenPort: &newPort}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "phone rebound", func() bool { return phone.dev.Port() != 0 && phone.dev.Port() != old })
	flow(t, phone, gw, 5*time.Second)
	flow(t, gw, phone, 5*time.Second)
	if p := gw.ms.PeerPath(nodeKeyOf(phone.key)); p.Kind != magicsock.PathPlain || p.Addr.Port() != phone.dev.Port() {
		t.Fatalf("path to the roamed phone %+v, want wireguard at port %d", p, phone.dev.Port())
	}
	if n := relay.n.Load(); n != 0 {
		t.Fatalf("%d packets for the plain peer went to the relay", n)
	}
}
