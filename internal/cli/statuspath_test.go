package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
)

// TestStatusPathReason: `warren status` says why a peer's path is not
// direct, in text and in JSON.
func TestStatusPathReason(t *testing.T) {
	st := &localapi.Status{BackendState: localapi.StateRunning, Connected: true, Self: &localapi.PeerStatus{Name: "self"}, Peers: []localapi.PeerStatus{
		{Name: "far", Online: true, Path: "relay", PathRelay: "fra", PathReason: "probes-unanswered"},
		{Name: "near", Online: true, Path: "direct", PathAddr: "198.18.0.2:41641"},
		{Name: "hard", Online: true, Path: "peer-relay", PathRelay: "relay1", PathReason: "probes-unanswered"},
	}}
	var b bytes.Buffer
	writeStatus(&b, st, time.Now())
	out := b.String()
	if !strings.Contains(out, "relay fra (not direct: probes-unanswered)") {
		t.Errorf("status text lacks the reason:\n%s", out)
	}
	if !strings.Contains(out, "peer relay relay1 (not direct: probes-unanswered)") {
		t.Errorf("status text lacks the peer relay:\n%s", out)
	}
	if strings.Count(out, "not direct") != 2 {
		t.Errorf("a direct peer got a reason:\n%s", out)
	}
	j, _ := json.Marshal(st)
	if !strings.Contains(string(j), `"pathReason":"probes-unanswered"`) {
		t.Errorf("status JSON lacks the reason: %s", j)
	}
}

// TestStatusWireGuardTraffic: a WireGuard-only member of another gateway
// shows the traffic its gateway reported, saying so and how long ago, in
// text and in JSON.
func TestStatusWireGuardTraffic(t *testing.T) {
	now := time.Now()
	st := &localapi.Status{BackendState: localapi.StateRunning, Connected: true, Self: &localapi.PeerStatus{Name: "self"}, Peers: []localapi.PeerStatus{
		{Name: "phone", Online: true, Via: "gw", LastHandshake: now.Add(-5 * time.Second), RxBytes: 3 << 20, TxBytes: 2048, TrafficReportedAt: now.Add(-45 * time.Second)},
		{Name: "laptop", Online: true, Path: "direct", PathAddr: "198.18.0.2:41641", RxBytes: 100, TxBytes: 200},
	}}
	var b bytes.Buffer
	writeStatus(&b, st, now)
	out := b.String()
	if !strings.Contains(out, "via gw, handshake 5s ago, rx 3.0 MiB tx 2.0 KiB as reported by gateway gw 45s ago") {
		t.Errorf("status text lacks the gateway's report:\n%s", out)
	}
	if !strings.Contains(out, "rx 100 B tx 200 B\n") {
		t.Errorf("a Warren peer's own counters changed:\n%s", out)
	}
	j, _ := json.Marshal(st)
	if !strings.Contains(string(j), `"rxBytes":3145728,"txBytes":2048,"trafficReportedAt":`) {
		t.Errorf("status JSON lacks the report: %s", j)
	}
}
