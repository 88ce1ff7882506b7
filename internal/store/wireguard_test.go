package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestWireGuardNodes(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		gw := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("gateway"), "gw", RegisterOptions{}))
		other := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("other"), "other", RegisterOptions{}))
		phone := must[*Node](t)(s.AddWireGuardNode(ctx, WireGuardNode{UserID: u.ID, Name: "Phone", Key: nodeKeyOf("phone"), Via: gw.ID, Tags: []string{"tag:mobile"}}))
		got := must[*Node](t)(s.GetNode(ctx, phone.ID))
		if got.Via != gw.ID || got.Name != "phone" || !got.IPv4.IsValid() || got.IPv4 == gw.IPv4 || got.Tags[0] != "tag:mobile" {
			t.Fatalf("stored %+v", got)
		}
		// Refused: a key another node holds, a low-order or zero key, a
		// gateway that is missing or itself WireGuard-only.
		if _, err := s.AddWireGuardNode(ctx, WireGuardNode{UserID: u.ID, Name: "x", Key: nodeKeyOf("gateway"), Via: gw.ID}); !errors.Is(err, ErrNodeKeyInUse) {
			t.Fatalf("key of another node: %v", err)
		}
		var lowOrder noise.PublicKey // u = 1, a point of order 4
		lowOrder[0] = 1
		for _, k := range []pubkey.Node{{}, {PublicKey: lowOrder}} {
			if _, err := s.AddWireGuardNode(ctx, WireGuardNode{UserID: u.ID, Name: "x", Key: k, Via: gw.ID}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("key %v: %v", k, err)
			}
		}
		for _, via := range []int64{phone.ID, 9999} {
			if _, err := s.AddWireGuardNode(ctx, WireGuardNode{UserID: u.ID, Name: "x", Key: nodeKeyOf("x"), Via: via}); !errors.Is(err, ErrBadGateway) {
				t.Fatalf("via %d: %v", via, err)
			}
		}
		// The gateway reports handshakes; reports for nodes not its own
		// are ignored.
		hs := time.Unix(1700000000, 0)
		at := time.Unix(1700000005, 0)
		if err := s.ReportWireGuard(ctx, gw.ID, []WireGuardReport{{ID: phone.ID, Online: true, LastHandshake: hs, RxBytes: 10, TxBytes: 20, At: at}, {ID: other.ID, Online: true}}); err != nil {
			t.Fatal(err)
		}
		if err := s.ReportWireGuard(ctx, other.ID, []WireGuardReport{{ID: phone.ID, Online: false, RxBytes: 999, TxBytes: 999, At: at.Add(time.Second)}}); err != nil {
			t.Fatal(err)
		}
		got = must[*Node](t)(s.GetNode(ctx, phone.ID))
		if !got.Online || !got.LastSeen.Equal(hs) || got.RxBytes != 10 || got.TxBytes != 20 || !got.TrafficAt.Equal(at) {
			t.Fatalf("after report %+v", got)
		}
		// The same counters again (a newer handshake) keep the time they
		// were first reported; new counters move it.
		hs2 := hs.Add(time.Minute)
		if err := s.ReportWireGuard(ctx, gw.ID, []WireGuardReport{{ID: phone.ID, Online: true, LastHandshake: hs2, RxBytes: 10, TxBytes: 20, At: at.Add(time.Minute)}}); err != nil {
			t.Fatal(err)
		}
		if got = must[*Node](t)(s.GetNode(ctx, phone.ID)); !got.LastSeen.Equal(hs2) || !got.TrafficAt.Equal(at) {
			t.Fatalf("same counters: %+v", got)
		}
		if err := s.ReportWireGuard(ctx, gw.ID, []WireGuardReport{{ID: phone.ID, Online: true, LastHandshake: hs2, RxBytes: 11, TxBytes: 20, At: at.Add(2 * time.Minute)}}); err != nil {
			t.Fatal(err)
		}
		if got = must[*Node](t)(s.GetNode(ctx, phone.ID)); got.RxBytes != 11 || !got.TrafficAt.Equal(at.Add(2*time.Minute)) {
			t.Fatalf("new counters: %+v", got)
		}
		if o := must[*Node](t)(s.GetNode(ctx, other.ID)); o.Online {
			t.Fatal("a report made a Warren node online")
		}
		// The gateway going offline takes the device with it.
		if err := s.SetOnline(ctx, gw.ID, false, hs); err != nil {
			t.Fatal(err)
		}
		if got = must[*Node](t)(s.GetNode(ctx, phone.ID)); got.Online {
			t.Fatal("device online behind an offline gateway")
		}
		// Moving to another gateway; not to itself, not for a Warren node.
		if err := s.SetWireGuardVia(ctx, phone.ID, other.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.SetWireGuardVia(ctx, phone.ID, phone.ID); !errors.Is(err, ErrBadGateway) {
			t.Fatalf("via itself: %v", err)
		}
		if err := s.SetWireGuardVia(ctx, other.ID, gw.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("via for a Warren node: %v", err)
		}
	})
}
