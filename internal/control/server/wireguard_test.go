package server_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// A WireGuard-only member is in every map with its gateway (Via); the
// gateway's filter carries the member's rules and lets its packets through
// to the other members; the gateway's reports make it online for the
// others, and the gateway going away takes it offline.
func TestWireGuardMember(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	ctx := context.Background()
	if _, err := e.st.SetPolicy(ctx, `{
		"tagOwners": {"tag:phone": ["alice@"]},
		"acls": [
			{"action": "accept", "src": ["alice@"], "dst": ["*:*"]},
			{"action": "accept", "src": ["tag:phone"], "dst": ["alice@:80"]},
		],
	}`); err != nil {
		t.Fatal(err)
	}
	e.start()
	gw := e.join("gw", e.reuse)
	other := e.join("other", e.reuse)
	phoneKey := genKey(t)
	dev, err := e.st.AddWireGuardNode(ctx, store.WireGuardNode{UserID: e.user.ID, Name: "phone", Key: pubkey.Node{PublicKey: phoneKey.PublicKey()},
		Via: int64(gw.self.ID), Tags: []string{"tag:phone"}})
	if err != nil {
		t.Fatal(err)
	}
	devV4 := netip.PrefixFrom(dev.IPv4, 32)
	// The device's key gets no registration, stream, rotation or logout
	// of its own: its gateway speaks for it.
	pc := e.client(phoneKey, "", "")
	var re *client.RegisterError
	if _, err := pc.Register(ctx, e.reuse, "phone", nil); !errors.As(err, &re) || re.Code != proto.CodeNodeKeyInUse {
		t.Fatalf("register with the device's key: %v", err)
	}
	runCtx, cancelRun := context.WithTimeout(ctx, pushWait)
	defer cancelRun()
	var pe *proto.Error
	if err := pc.Run(runCtx, func(*netmap.NetworkMap) {}); !errors.As(err, &pe) || pe.Code != proto.CodeNotRegistered {
		t.Fatalf("map stream with the device's key: %v", err)
	}
	if _, err := pc.RotateKey(ctx, genKey(t)); !errors.As(err, &re) || re.Code != proto.CodeNotRegistered {
		t.Fatalf("rotation with the device's key: %v", err)
	}
	if err := pc.Logout(ctx); !errors.As(err, &re) || re.Code != proto.CodeNotRegistered {
		t.Fatalf("logout with the device's key: %v", err)
	}
	m := other.waitMap("the phone in other's map", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(uint64(dev.ID))
		return ok && p.Via == gw.self.ID && p.DiscoKey.IsZero()
	})
	if p, _ := m.Peer(uint64(dev.ID)); p.Online {
		t.Fatal("the phone is online before its gateway reported it")
	}
	// The gateway's filter: alice's nodes reach the phone (its rules with
	// Dst = its addresses), the phone's packets pass to "other" but not to
	// the gateway itself beyond what the gateway allows it (port 80).
	m = gw.waitMap("the phone's rules in the gateway's filter", pushWait, func(m *netmap.NetworkMap) bool {
		f := filterOf(t, m)
		return f != nil && slices.ContainsFunc(f.Rules, func(r filter.Rule) bool { return slices.Contains(r.Dst, devV4) })
	})
	f := filterOf(t, m)
	var through, toGW bool
	for _, r := range f.Rules {
		if slices.Contains(r.Src, devV4) && slices.Contains(r.Dst, other.self.Addresses[0]) {
			through = true
		}
		if slices.Contains(r.Src, devV4) && slices.Contains(r.Dst, gw.self.Addresses[0]) {
			t.Fatalf("a rule lets the phone reach the gateway's own address: %+v", r)
		}
		if slices.Contains(r.Src, devV4) && len(r.Dst) == 0 && len(r.Ports) == 1 && r.Ports[0].First == 80 {
			toGW = true
		}
	}
	if !through || !toGW {
		t.Fatalf("gateway filter (through %v, port 80 %v): %s", through, toGW, m.PacketFilter)
	}

	// The gateway reports a recent handshake: online for the others.
	hs := time.Now().UTC().Truncate(time.Second)
	if err := gw.c.SetWireGuard([]proto.WireGuardReport{{ID: uint64(dev.ID), Online: true, LastHandshake: hs, RxBytes: 1, TxBytes: 2}}); err != nil {
		t.Fatal(err)
	}
	other.waitMap("the phone online", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(uint64(dev.ID))
		return ok && p.Online && p.LastSeen.Equal(hs)
	})
	// The gateway goes away: the phone goes offline with it.
	gw.stop()
	other.waitMap("the phone offline with its gateway", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(uint64(dev.ID))
		return ok && !p.Online
	})
	if n, err := e.st.GetNode(ctx, dev.ID); err != nil || n.RxBytes != 1 || n.TxBytes != 2 {
		t.Fatalf("stored %+v %v", n, err)
	}
}
