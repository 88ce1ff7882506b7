package client

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestServerKeyTyped: the pinned server key has its own type, so a relay's
// or a node's key cannot be pinned as the control server's by mistake.
func TestServerKeyTyped(t *testing.T) {
	if got, want := reflect.TypeOf(Config{}.ServerKey), reflect.TypeOf(pubkey.Server{}); got != want {
		t.Fatalf("Config.ServerKey is %v, want %v", got, want)
	}
	if got, want := reflect.TypeOf(Config{}.DiscoKey), reflect.TypeOf(pubkey.Disco{}); got != want {
		t.Fatalf("Config.DiscoKey is %v, want %v", got, want)
	}
}
