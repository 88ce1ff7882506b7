package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestRotateKey(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:1"))
	b := e.join("bravo", e.reuse, ap("192.0.2.2:2"))
	b.waitMap("alpha", pushWait, hasPeers(a))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Claiming bravo's key without its private half fails, and changes nothing.
	forged := make([]byte, proto.ProofSize)
	rand.Read(forged)
	conn, err := noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), a.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Write(conn, &proto.Message{RotateKeyRequest: &proto.RotateKeyRequest{NewKey: pubkey.Node{PublicKey: b.key.PublicKey()}, Proof: forged}}); err != nil {
		t.Fatal(err)
	}
	m, err := proto.Read(conn, proto.MaxClientMessage)
	conn.Close()
	if err != nil || m.RotateKeyResponse == nil || m.RotateKeyResponse.Code != proto.CodeBadRequest {
		t.Fatalf("forged rotation: %+v %v", m, err)
	}
	// A valid proof for a key another node has is refused too.
	var re *client.RegisterError
	if _, err := a.c.RotateKey(ctx, b.key); !errors.As(err, &re) || re.Code != proto.CodeNodeKeyInUse {
		t.Fatalf("rotation onto bravo's key: %v", err)
	}

	// A real rotation: same node, new key, seen by bravo.
	a.stop()
	newKey := genKey(t)
	self, err := a.c.RotateKey(ctx, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if self.ID != a.self.ID || self.Name != "alpha" || !slices.Equal(self.Addresses, a.self.Addresses) {
		t.Fatalf("rotated node %+v, was %+v", self, a.self)
	}
	b.waitMap("alpha's new key", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(a.self.ID)
		return ok && p.Key.PublicKey == newKey.PublicKey()
	})
	// The old key is gone; the new one streams.
	if _, err := a.c.RotateKey(ctx, genKey(t)); !errors.As(err, &re) || re.Code != proto.CodeNotRegistered {
		t.Fatalf("rotation from the retired key: %v", err)
	}
	a2 := &node{t: t, key: newKey, self: self}
	a2.c = e.client(newKey, filepath.Join(t.TempDir(), "netmap.json"), "")
	a2.run()
	a2.waitMap("bravo", pushWait, hasPeers(b))
}

func TestLogout(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	b.waitMap("alpha", pushWait, hasPeers(a))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.stop()
	if err := a.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitMap("alpha gone", pushWait, hasPeers())
	if _, err := e.st.GetNode(ctx, int64(a.self.ID)); err == nil {
		t.Fatal("logged-out node still stored")
	}
	var re *client.RegisterError
	if err := a.c.Logout(ctx); !errors.As(err, &re) || re.Code != proto.CodeNotRegistered {
		t.Fatalf("second logout: %v", err)
	}
}

// TestExpiryPassing: a node whose expiry time passes while it is connected
// is refused at that moment (not at the next poll, an hour away), and
// peers see it expired. On a fake clock: the server arms its expiry timer
// for exactly the node's expiry, the stream stays open until then, and
// is refused when the clock reaches it.
func TestExpiryPassing(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Now().Truncate(time.Second))
	e := newEnv(t, server.Options{PollInterval: time.Hour, Clock: fc})
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	a.waitMap("bravo", pushWait, hasPeers(b))
	ctx := context.Background()
	at := fc.Now().Add(10 * time.Second) // before the first keepalive (30 s)
	if err := e.st.SetNodeExpiry(ctx, int64(b.self.ID), at); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	a.waitMap("bravo's expiry", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(b.self.ID)
		return ok && p.Expiry.Equal(at)
	})
	wait.For(t, pushWait, "the expiry timer armed for bravo's expiry", func() bool {
		next, ok := fc.Next()
		return ok && next.Equal(at.Add(time.Millisecond))
	})
	fc.Advance(at.Sub(fc.Now()) - time.Millisecond)
	select {
	case err := <-b.done:
		t.Fatalf("bravo's stream ended before its expiry: %v", err)
	default:
	}
	fc.Advance(2 * time.Millisecond)
	select {
	case err := <-b.done:
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != proto.CodeNodeExpired {
			t.Fatalf("expired node's Run returned %v", err)
		}
		b.cancel = nil
	case <-time.After(pushWait):
		t.Fatal("expired node's stream still open after its expiry passed")
	}
}

// TestExpiredNodeNeedsUsableKey: an admin expires a node that joined with a
// one-off key; registering again with that spent key is refused and the
// node stays expired (its map stream refused); a fresh key brings it back.
func TestExpiredNodeNeedsUsableKey(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{PollInterval: time.Hour})
	e.start()
	ctx := context.Background()
	once, _, err := e.st.CreatePreAuthKey(ctx, e.user.ID, store.PreAuthKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := e.join("bravo", once)
	b.waitMap("its own map", pushWait, func(m *netmap.NetworkMap) bool { return m.Self.ID == b.self.ID })
	if err := e.st.SetNodeExpiry(ctx, int64(b.self.ID), time.Now()); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	select {
	case <-b.done:
		b.cancel = nil
	case <-time.After(2 * pushWait):
		t.Fatal("expired node's stream still open")
	}
	_, err = b.c.Register(ctx, once, "bravo", nil)
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeAuthKeyUsed {
		t.Fatalf("expired node re-registering with its spent one-off key: %v", err)
	}
	err = b.c.Run(ctx, func(*netmap.NetworkMap) {})
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeNodeExpired {
		t.Fatalf("map stream after the refused re-registration: %v", err)
	}
	fresh, _, err := e.st.CreatePreAuthKey(ctx, e.user.ID, store.PreAuthKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	self, err := b.c.Register(ctx, fresh, "bravo", nil)
	if err != nil || self.ID != b.self.ID || !self.Expiry.IsZero() {
		t.Fatalf("with a fresh key: %+v, %v", self, err)
	}
	b.run()
	b.waitMap("its map again", pushWait, func(m *netmap.NetworkMap) bool { return m.Self.ID == b.self.ID })
}
