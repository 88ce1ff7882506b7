package magicsock_test

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// TestKeysTyped: the path layer names peers by their node key and probes
// with disco keys, each its own type, so that a disco key (or the engine's
// raw WireGuard key) cannot be handed where a node is meant.
func TestKeysTyped(t *testing.T) {
	node, disco := reflect.TypeOf(pubkey.Node{}), reflect.TypeOf(pubkey.Disco{})
	field := func(v any, name string) reflect.Type {
		f, ok := reflect.TypeOf(v).FieldByName(name)
		if !ok {
			t.Fatalf("%T has no field %s", v, name)
		}
		return f.Type
	}
	conn := reflect.TypeOf((*magicsock.Conn)(nil))
	method := func(name string) reflect.Type {
		m, ok := conn.MethodByName(name)
		if !ok {
			t.Fatalf("Conn has no method %s", name)
		}
		return m.Type
	}
	relaySend, _ := reflect.TypeOf((*magicsock.Relay)(nil)).Elem().MethodByName("Send")
	for what, c := range map[string]struct{ got, want reflect.Type }{
		"PeerInfo.Key":                         {field(magicsock.PeerInfo{}, "Key"), node},
		"PeerInfo.DiscoKey":                    {field(magicsock.PeerInfo{}, "DiscoKey"), disco},
		"Options.NodeKey":                      {field(magicsock.Options{}, "NodeKey"), node},
		"Conn.PeerPath's key":                  {method("PeerPath").In(1), node},
		"Conn.Probe's key":                     {method("Probe").In(1), node},
		"Conn.SetNodeKey's key":                {method("SetNodeKey").In(1), node},
		"Conn.ReceiveRelayed's source":         {method("ReceiveRelayed").In(1), node},
		"Conn.DiscoPublic":                     {method("DiscoPublic").Out(0), disco},
		"PeerEndpoint's key":                   {reflect.TypeOf(magicsock.PeerEndpoint).In(0), node},
		"Relay.Send's destination":             {relaySend.Type.In(0), node},
		"relay.Client.Send's destination":      {reflect.TypeOf((*relay.Client).Send).In(1), node},
		"relay.ClientOptions.Receive's source": {field(relay.ClientOptions{}, "Receive").In(0), node},
	} {
		if c.got != c.want {
			t.Errorf("%s is %v, want %v", what, c.got, c.want)
		}
	}
	if disco.AssignableTo(node) || node.AssignableTo(disco) {
		t.Error("node and disco keys are assignable to each other")
	}
}
