package netmap

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestKeyFieldsTyped: every key in the map has the type of its kind, so a
// disco key cannot be stored where a node key is meant (or a relay's
// where either is) without an explicit conversion, and the kinds are
// distinct types.
func TestKeyFieldsTyped(t *testing.T) {
	node, disco, relay := reflect.TypeOf(pubkey.Node{}), reflect.TypeOf(pubkey.Disco{}), reflect.TypeOf(pubkey.Relay{})
	field := func(v any, name string) reflect.Type {
		f, ok := reflect.TypeOf(v).FieldByName(name)
		if !ok {
			t.Fatalf("%T has no field %s", v, name)
		}
		return f.Type
	}
	for what, c := range map[string]struct{ got, want reflect.Type }{
		"Node.Key":            {field(Node{}, "Key"), node},
		"Node.DiscoKey":       {field(Node{}, "DiscoKey"), disco},
		"PeerChange.Key":      {field(PeerChange{}, "Key"), reflect.PointerTo(node)},
		"PeerChange.DiscoKey": {field(PeerChange{}, "DiscoKey"), reflect.PointerTo(disco)},
		"RelayRegion.Key":     {field(RelayRegion{}, "Key"), relay},
	} {
		if c.got != c.want {
			t.Errorf("%s is %v, want %v", what, c.got, c.want)
		}
	}
	for _, p := range [][2]reflect.Type{{node, disco}, {disco, node}, {node, relay}, {relay, node}, {disco, relay}} {
		if p[0].AssignableTo(p[1]) {
			t.Errorf("%v is assignable to %v", p[0], p[1])
		}
	}
}
