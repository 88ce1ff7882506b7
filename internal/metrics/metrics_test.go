package metrics

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/portmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/udp"
)

// TestNode gathers a node's collectors through a pedantic registry (every
// metric matches its description) and serves them over HTTP on loopback.
// The server's and relay's are tested in package servermetrics.
func TestNode(t *testing.T) {
	tr := udp.New()
	priv, _ := noise.GeneratePrivateKey()
	ms := magicsock.New(tr, magicsock.Options{NodeKey: pubkey.Node{PublicKey: priv.PublicKey()}, DiscoKey: priv})
	dev := device.New(tuntest.New(1420), ms, device.Options{})
	defer dev.Close()
	dev.Stats.DropReplay.Add(3)
	unknown, _ := noise.GeneratePrivateKey()
	pm := portmap.New(portmap.Options{Port: 41641})
	pm.Stats.WrongNonce.Add(2)
	reg := Registry(&Node{Device: dev, Paths: ms, UDP: tr,
		Peers:          func() []Peer { return []Peer{{Key: pubkey.Node{PublicKey: unknown.PublicKey()}, Name: "gone"}} },
		CaptureDropped: func() uint64 { return 7 },
		PortMap:        func() *portmap.Client { return pm }})
	var b bytes.Buffer
	if err := WriteText(&b, reg); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		`warren_drops_total{reason="replay"} 3`, `warren_drops_total{reason="policy"} 0`,
		`warren_drops_total{reason="bad_mac"} 0`, `warren_drops_total{reason="no_route"} 0`,
		`warren_drops_total{reason="no_session"} 0`, `warren_drops_total{reason="queue_full"} 0`,
		`warren_queue_depth{queue="handshake"} 0`, `warren_capture_dropped_total 7`,
		`warren_udp_messages_total{dir="tx"} 0`, "go_goroutines",
		`warren_portmap_replies_ignored_total{reason="nonce"} 2`, `warren_portmap_mapped{protocol="pcp"} 0`,
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, `peer="gone"`) {
		t.Error("a peer the engine does not know was reported")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "0", reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr.String(), "127.0.0.1:") {
		t.Fatalf("a bare port bound %s, want loopback", addr)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `warren_drops_total{reason="replay"} 3`) {
		t.Fatalf("GET /metrics: %s\n%.500s", resp.Status, body)
	}
}

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{"9100": "127.0.0.1:9100", ":9100": "127.0.0.1:9100",
		"[::1]:9100": "[::1]:9100", "0.0.0.0:9100": "0.0.0.0:9100"} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ListenAddr("not an address"); err == nil {
		t.Error("bad address accepted")
	}
}
