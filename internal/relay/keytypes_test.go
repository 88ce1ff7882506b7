package relay

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestRelayKeyTyped: a relay's key has its own type from the map to the
// dial, so a node key (or the control server's) cannot be passed by
// mistake where the relay's pinned key is meant.
func TestRelayKeyTyped(t *testing.T) {
	want := reflect.TypeOf(pubkey.Relay{})
	for what, got := range map[string]reflect.Type{
		"Dial's relayKey":        reflect.TypeOf(Dial).In(2),
		"NewClient's relayKey":   reflect.TypeOf(NewClient).In(1),
		"Region.Key":             reflect.TypeOf(Region.Key).Out(0),
		"Conn.RelayKey":          reflect.TypeOf((*Conn).RelayKey).Out(0),
		"netmap.RelayRegion.Key": reflect.TypeOf(netmap.RelayRegion{}.Key),
	} {
		if got != want {
			t.Errorf("%s is %v, want %v", what, got, want)
		}
	}
	if reflect.TypeOf(pubkey.Node{}).AssignableTo(want) {
		t.Error("a node key is assignable to a relay key")
	}
}
