package relayserver

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// TestSessionKeysTyped: inside the relay, a node's key is a node key from
// the frame to the client table and the vouching, and the relay's own key
// is a relay key, so a node key cannot stand for the relay's or a raw
// array for either.
func TestSessionKeysTyped(t *testing.T) {
	node, rel := reflect.TypeOf(pubkey.Node{}), reflect.TypeOf(pubkey.Relay{})
	for what, c := range map[string]struct{ got, want reflect.Type }{
		"Options.Allowed's key":         {reflect.TypeOf(Options{}.Allowed).In(0), node},
		"StoreAllowed's key":            {reflect.TypeOf(StoreAllowed).Out(0).In(0), node},
		"AdminPoller.Allowed's key":     {reflect.TypeOf((*AdminPoller).Allowed).In(1), node},
		"the client table's key":        {reflect.TypeOf(Server{}.clients).Key(), node},
		"a client's key":                {reflect.TypeOf(client{}.key), node},
		"a queued frame's key":          {reflect.TypeOf(item{}.key), node},
		"lookup's key":                  {reflect.TypeOf((*Server).lookup).In(1), node},
		"Server.PublicKey":              {reflect.TypeOf((*Server).PublicKey).Out(0), rel},
		"relay.SplitKey's key":          {reflect.TypeOf(relay.SplitKey).Out(0), node},
		"relay.Message.Peer":            {reflect.TypeOf(relay.Message{}.Peer), node},
		"relay.Conn.Send's destination": {reflect.TypeOf((*relay.Conn).Send).In(1), node},
	} {
		if c.got != c.want {
			t.Errorf("%s is %v, want %v", what, c.got, c.want)
		}
	}
}
