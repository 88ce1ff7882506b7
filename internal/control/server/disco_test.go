package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// registerWithDisco registers a new node and returns a client that reports
// disco as its path-probe key.
func (e *env) registerWithDisco(hostname string, disco noise.PublicKey) (*client.Client, *netmap.Node) {
	e.t.Helper()
	c := e.client(genKey(e.t), "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := c.Register(ctx, e.reuse, hostname, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := c.Config()
	cfg.DiscoKey = pubkey.Disco{PublicKey: disco}
	c2, err := client.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c2, self
}

// TestDuplicateDiscoKeyRefused: a member reporting the disco key another
// node holds (to have its probes and pongs taken for that node's) is
// refused with a clear error, and the holder's key stays in everyone's map.
func TestDuplicateDiscoKeyRefused(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	disco := genKey(t).PublicKey()
	victim, vself := e.registerWithDisco("victim", disco)
	v := &node{t: t, key: victim.Config().NodeKey, self: vself, c: victim}
	v.run()
	obs := e.join("observer", e.reuse)
	obs.waitMap("the victim's disco key", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(vself.ID)
		return ok && p.DiscoKey.PublicKey == disco
	})

	rogue, rself := e.registerWithDisco("rogue", disco)
	ctx, cancel := context.WithTimeout(context.Background(), pushWait)
	defer cancel()
	err := rogue.Run(ctx, func(*netmap.NetworkMap) {})
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != "disco_key_in_use" {
		t.Fatalf("the rogue's map stream with another node's disco key: %v, want a disco_key_in_use refusal", err)
	}
	m := obs.waitMap("the rogue in the map", pushWait, func(m *netmap.NetworkMap) bool {
		_, ok := m.Peer(rself.ID)
		return ok
	})
	if p, _ := m.Peer(rself.ID); p.DiscoKey.PublicKey == disco {
		t.Fatal("the rogue's map entry carries the victim's disco key")
	}
	if p, ok := m.Peer(vself.ID); !ok || p.DiscoKey.PublicKey != disco {
		t.Fatalf("the victim's disco key changed: %+v", p)
	}

	// The same claim in an endpoint update on an open stream is refused.
	ctx, cancel = context.WithTimeout(context.Background(), pushWait)
	defer cancel()
	conn, err := noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), rogue.Config().NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(pushWait))
	if err := proto.Write(conn, &proto.Message{MapRequest: &proto.MapRequest{}}); err != nil {
		t.Fatal(err)
	}
	if r, err := proto.Read(conn, proto.MaxClientMessage); err != nil || r.MapResponse == nil || r.MapResponse.Full == nil {
		t.Fatalf("full map: %+v %v", r, err)
	}
	if err := proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{DiscoKey: &pubkey.Disco{PublicKey: disco}}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := proto.Read(conn, proto.MaxClientMessage)
		if err != nil {
			t.Fatalf("no refusal of an endpoint update with another node's disco key: %v", err)
		}
		if r.Error != nil {
			if r.Error.Code != "disco_key_in_use" {
				t.Fatalf("refusal %+v", r.Error)
			}
			break
		}
	}
	if p, _ := obs.c.NetworkMap().Peer(rself.ID); p.DiscoKey.PublicKey == disco {
		t.Fatal("the rogue's map entry carries the victim's disco key")
	}
}
