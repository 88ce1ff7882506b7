package server

import (
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestHandlerKeysTyped: the key a control session proved is a node key
// from the handshake to the store, and the server's own key is a server
// key, so neither can be passed where another kind of key is meant.
func TestHandlerKeysTyped(t *testing.T) {
	node, server := reflect.TypeOf(pubkey.Node{}), reflect.TypeOf(pubkey.Server{})
	for what, c := range map[string]struct{ got, want reflect.Type }{
		"register's key":                {reflect.TypeOf((*Server).register).In(1), node},
		"stream's key":                  {reflect.TypeOf((*Server).stream).In(2), node},
		"rotateKey's key":               {reflect.TypeOf((*Server).rotateKey).In(1), node},
		"logout's key":                  {reflect.TypeOf((*Server).logout).In(1), node},
		"VerifyRotationProof's old key": {reflect.TypeOf(proto.VerifyRotationProof).In(1), node},
		"VerifyRotationProof's new key": {reflect.TypeOf(proto.VerifyRotationProof).In(2), node},
		"Server.PublicKey":              {reflect.TypeOf((*Server).PublicKey).Out(0), server},
		"Store.GetNodeByKey's key":      {reflect.TypeOf((Store).GetNodeByKey).In(2), node},
		"Store.RegisterNode's key":      {reflect.TypeOf((Store).RegisterNode).In(3), node},
	} {
		if c.got != c.want {
			t.Errorf("%s is %v, want %v", what, c.got, c.want)
		}
	}
}
