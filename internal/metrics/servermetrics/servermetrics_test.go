package servermetrics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

// TestRelay gathers a relay server's collector through the pedantic
// registry of package metrics (every metric matches its description).
func TestRelay(t *testing.T) {
	priv, _ := noise.GeneratePrivateKey()
	rs, err := relayserver.NewServer(relayserver.Options{Key: priv, Allowed: func(pubkey.Node) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var b bytes.Buffer
	if err := metrics.WriteText(&b, metrics.Registry(Relay{R: rs})); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`warren_relay_clients 0`, `warren_relay_server_drops_total{reason="no_peer"} 0`,
		`warren_relay_sessions_total{event="refused"} 0`, `warren_relay_server_closed_total{reason="oversize"} 0`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestServer gathers a coordination server's collector the same way; a
// server alone runs the singleton duties.
func TestServer(t *testing.T) {
	cs := controltest.Start(t, server.Options{})
	var b bytes.Buffer
	if err := metrics.WriteText(&b, metrics.Registry(Server{S: cs.Server()})); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`warren_server_nodes_online 0`, `warren_server_duties 1`, `warren_server_netmaps_sent_total{kind="full"} 0`, `warren_server_netmaps_sent_total{kind="resume"} 0`,
		`warren_server_wireguard_traffic_changes_total{result="held"} 0`} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}
