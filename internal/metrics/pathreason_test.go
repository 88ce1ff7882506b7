package metrics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// TestNodePathReason: a peer the path layer cannot probe (no disco key)
// shows its path kind and why it is not direct.
func TestNodePathReason(t *testing.T) {
	priv, _ := noise.GeneratePrivateKey()
	peer, _ := noise.GeneratePrivateKey()
	peerKey := pubkey.Node{PublicKey: peer.PublicKey()}
	ms := magicsock.New(udp.New(), magicsock.Options{NodeKey: pubkey.Node{PublicKey: priv.PublicKey()}, DiscoKey: priv})
	dev := device.New(tuntest.New(1420), ms, device.Options{})
	defer dev.Close()
	port := uint16(0)
	if err := dev.Apply(&uapi.Config{PrivateKey: &priv, ListenPort: &port,
		Peers: []uapi.PeerConfig{{PublicKey: peerKey.PublicKey, Endpoint: magicsock.PeerEndpoint(peerKey)}}}); err != nil {
		t.Fatal(err)
	}
	ms.SetPeers([]magicsock.PeerInfo{{Key: peerKey}})
	var relayStats peerrelay.Stats
	relayStats.RateLimited.Add(4)
	reg := Registry(&Node{Device: dev, Paths: ms,
		Peers:     func() []Peer { return []Peer{{Key: peerKey, Name: "p"}} },
		PeerRelay: func() *peerrelay.Stats { return &relayStats }})
	var b bytes.Buffer
	if err := WriteText(&b, reg); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		`warren_peer_path_not_direct{key="` + peerKey.String() + `",peer="p",reason="no-probe-key"} 1`,
		`warren_peer_path{key="` + peerKey.String() + `",path="none",peer="p"} 1`,
		`warren_peer_path{key="` + peerKey.String() + `",path="peer-relay",peer="p"} 0`,
		`warren_peer_relay_server_packets_total{event="rate_limited"} 4`,
		`warren_peer_relay_packets_total{event="refused"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s\n%s", want, grepLines(text, "warren_peer_path"))
		}
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
