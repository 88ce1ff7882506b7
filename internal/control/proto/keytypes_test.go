package proto

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestRotationProofKeysTyped: RotationProof takes the server's key and
// the node's old key, both Curve25519 public keys; typed, they cannot be
// swapped (which would build a proof the server refuses, or worse, one
// bound to the wrong key).
func TestRotationProofKeysTyped(t *testing.T) {
	ft := reflect.TypeOf(RotationProof)
	if got, want := ft.In(1), reflect.TypeOf(pubkey.Server{}); got != want {
		t.Errorf("RotationProof's server key is %v, want %v", got, want)
	}
	if got, want := ft.In(2), reflect.TypeOf(pubkey.Node{}); got != want {
		t.Errorf("RotationProof's old key is %v, want %v", got, want)
	}
}

// TestDiscoKeysTyped: the disco key a node reports is typed on the wire
// types, so the server cannot store a node key (or any other) as one.
func TestDiscoKeysTyped(t *testing.T) {
	want := reflect.TypeOf(&pubkey.Disco{})
	for what, got := range map[string]reflect.Type{
		"MapRequest.DiscoKey":     reflect.TypeOf(MapRequest{}.DiscoKey),
		"EndpointUpdate.DiscoKey": reflect.TypeOf(EndpointUpdate{}.DiscoKey),
	} {
		if got != want {
			t.Errorf("%s is %v, want %v", what, got, want)
		}
	}
}

// TestRotateKeyRequestTyped: the new key of a rotation is a node key, and
// its wire form is still the base64 string it was as a plain key.
func TestRotateKeyRequestTyped(t *testing.T) {
	if got, want := reflect.TypeOf(RotateKeyRequest{}.NewKey), reflect.TypeOf(pubkey.Node{}); got != want {
		t.Errorf("RotateKeyRequest.NewKey is %v, want %v", got, want)
	}
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(RotateKeyRequest{NewKey: pubkey.Node{PublicKey: k.PublicKey()}, Proof: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"newKey":"` + k.PublicKey().String() + `","proof":"AQ=="}`; string(b) != want {
		t.Errorf("encoded %s, want %s", b, want)
	}
}
