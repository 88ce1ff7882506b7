package admin_test

import (
	"context"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/noise"
)

func TestWireGuardMember(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		gw := e.addNode("alice", "gw")
		if err := e.st.UpdateEndpoints(context.Background(), gw.ID, []string{"[2001:db8::1]:41641", "198.18.0.1:41641"}); err != nil {
			t.Fatal(err)
		}
		// Generated key: the private key comes once, in the config too.
		var d admin.WireGuardDevice
		e.must(201, &d, "POST", "/api/v1/wireguard", `{"name":"phone","user":"alice","via":"gw"}`)
		if d.PrivateKey == "" || !strings.Contains(d.Config, "PrivateKey = "+d.PrivateKey) || d.Node.Via != gw.ID || d.Via != "gw" {
			t.Fatalf("created %+v", d)
		}
		priv, err := noise.ParsePrivateKey(d.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if d.Node.NodeKey != priv.PublicKey().String() {
			t.Fatalf("node key %s is not the private key's", d.Node.NodeKey)
		}
		for _, want := range []string{"Address = " + d.Node.Addresses[0] + "/32, " + d.Node.Addresses[1] + "/128",
			"DNS = 100.100.100.100, ", "Endpoint = 198.18.0.1:41641", "PublicKey = " + gw.NodeKey.Text(),
			"AllowedIPs = 100.64.0.0/10, ", "PersistentKeepalive = 25"} {
			if !strings.Contains(d.Config, want) {
				t.Fatalf("config lacks %q:\n%s", want, d.Config)
			}
		}
		// Again: never the private key.
		var again admin.WireGuardDevice
		e.must(200, &again, "GET", "/api/v1/nodes/phone/wireguard-config?endpoint=gw.example:51820", "")
		if again.PrivateKey != "" || strings.Contains(again.Config, d.PrivateKey) || !strings.Contains(again.Config, "Endpoint = gw.example:51820") {
			t.Fatalf("config again:\n%s", again.Config)
		}
		// Bad input.
		e.fails(400, "is a Warren node, not a WireGuard-only member", "GET", "/api/v1/nodes/gw/wireguard-config", "")
		e.fails(409, "public key: already used by another node", "POST", "/api/v1/wireguard", `{"name":"x","user":"alice","via":"gw","public_key":"`+gw.NodeKey.Text()+`"}`)
		e.fails(400, "low-order", "POST", "/api/v1/wireguard", `{"name":"x","user":"alice","via":"gw","public_key":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`)
		e.fails(400, "is itself a WireGuard-only member", "POST", "/api/v1/wireguard", `{"name":"x","user":"alice","via":"phone"}`)
		e.fails(400, "not HOST:PORT", "GET", "/api/v1/nodes/phone/wireguard-config?endpoint=a%0Ab", "")
		// A given public key: no private key anywhere.
		k, _ := noise.GeneratePrivateKey()
		var given admin.WireGuardDevice
		e.must(201, &given, "POST", "/api/v1/wireguard", `{"name":"router","user":"alice","via":"gw","public_key":"`+k.PublicKey().String()+`"}`)
		if given.PrivateKey != "" || strings.Contains(given.Config, "\nPrivateKey = ") {
			t.Fatalf("given key:\n%s", given.Config)
		}
	})
}

// set-wireguard: another gateway, a new key; refusals as for adding.
func TestWireGuardChange(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		gw := e.addNode("alice", "gw")
		gw2 := e.addNode("alice", "gw2")
		var d admin.WireGuardDevice
		e.must(201, &d, "POST", "/api/v1/wireguard", `{"name":"phone","user":"alice","via":"gw","endpoint":"198.18.0.1:41641"}`)
		k, _ := noise.GeneratePrivateKey()
		var n admin.Node
		e.must(200, &n, "PATCH", "/api/v1/nodes/phone/wireguard", `{"via":"gw2","public_key":"`+k.PublicKey().String()+`"}`)
		if n.Via != gw2.ID || n.NodeKey != k.PublicKey().String() || n.ID != d.Node.ID || n.Addresses[0] != d.Node.Addresses[0] {
			t.Fatalf("changed %+v", n)
		}
		e.fails(409, "already used by another node", "PATCH", "/api/v1/nodes/phone/wireguard", `{"public_key":"`+gw.NodeKey.Text()+`"}`)
		e.fails(400, "low-order", "PATCH", "/api/v1/nodes/phone/wireguard", `{"public_key":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`)
		e.fails(400, "must be a Warren node", "PATCH", "/api/v1/nodes/phone/wireguard", `{"via":"phone"}`)
		e.fails(400, "is a Warren node, not a WireGuard-only member", "PATCH", "/api/v1/nodes/gw/wireguard", `{"via":"gw2"}`)
	})
}
