// Package relay owns Warren's packet relay protocol and its client: how a
// node reaches a relay that forwards already-encrypted WireGuard packets
// between nodes addressed by node public key, for when no direct UDP path
// works (UDP blocked, hard NAT, only an HTTP proxy out). It also owns the
// relay map types the coordination server hands to nodes. The server side
// (forwarding, queues, limits, vouching) is package relayserver; a node
// links only this package.
//
// A node connects with an HTTP/1.1 Upgrade to Path and runs a Noise IK
// session (package noiseconn, Protocol RelayProtocol) in which it proves
// its node key and checks the relay's pinned key; the relay refuses keys
// its Allowed function does not vouch for (HTTP 401, before the upgrade).
// TLS is used for https:// relay URLs and HTTP proxies are crossed with
// CONNECT, but the relay never sees plaintext either way: packets are
// WireGuard ciphertext inside the Noise session.
//
// Inside the session both sides exchange frames (see frame.go for the
// layout): the client sends "send to KEY: packet", the relay delivers
// "from KEY: packet", answers a send to an absent key with a "peer gone"
// notice (at most once a second per destination) so the sender can fall
// back, and both sides keep the connection alive with pings. A relayed
// packet is at most MaxPacketSize bytes; a larger frame closes the client.
package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

const (
	// Path is where the relay's upgrade handler is mounted.
	Path = "/warren/v1/relay"
	// MaxPacketSize is the largest packet relayed.
	MaxPacketSize = 64 << 10
	// KeyLen is the size of a node key on the wire.
	KeyLen = 32
	// DefaultSTUNPort is where relays answer STUN by default.
	DefaultSTUNPort = 3478
	// DefaultKeepAlive is how often a relay sends a keepalive unless its
	// first frame says otherwise.
	DefaultKeepAlive = 30 * time.Second
	// DefaultWriteTimeout bounds the write of one frame, either way.
	DefaultWriteTimeout = 10 * time.Second
)

// RelayProtocol is the noiseconn protocol of relay sessions: another
// path, Upgrade token and Noise prologue than the control protocol, so a
// relay session can never be mistaken for a control session or the
// reverse, even on a server that speaks both with the same key.
var RelayProtocol = noiseconn.Protocol{Path: Path, UpgradeToken: "warren-relay-v1", Name: "warren relay v1"}

// ErrNotVouched is wrapped by Dial's error when the relay does not accept
// the node key (the coordination server does not know it, or it expired).
var ErrNotVouched = noiseconn.ErrNotAuthorized

// Map is the set of relays the coordination server offers nodes. It is
// plain JSON.
type Map struct {
	Regions []Region `json:"regions"`
}

// Region is one relay: where it is, how to reach it, and the key it
// proves in the Noise handshake.
type Region struct {
	// ID is unique in the map and stable; nodes refer to their home relay
	// by it.
	ID int `json:"id"`
	// Code is a short name, e.g. "fra".
	Code string `json:"code"`
	// Name is for people, e.g. "Frankfurt".
	Name string `json:"name,omitempty"`
	// URL is the relay's base URL (http:// or https://); Path is appended.
	URL string `json:"url"`
	// PublicKey is the relay's static public key (base64).
	PublicKey string `json:"public_key"`
	// STUN is the "host:port" of its STUN responder; empty if none.
	STUN string `json:"stun,omitempty"`
}

// Key parses the region's public key.
func (r Region) Key() (pubkey.Relay, error) {
	k, err := noise.ParsePublicKey(r.PublicKey)
	if err != nil || k.IsZero() || k.IsLowOrder() {
		return pubkey.Relay{}, fmt.Errorf("relay region %d: invalid public key %q", r.ID, r.PublicKey)
	}
	return pubkey.Relay{PublicKey: k}, nil
}

// Validate checks the map: unique positive IDs, http(s) URLs, valid keys.
func (m Map) Validate() error {
	seen := map[int]bool{}
	for _, r := range m.Regions {
		if r.ID <= 0 || seen[r.ID] {
			return fmt.Errorf("relay map: region ID %d is not positive or not unique", r.ID)
		}
		seen[r.ID] = true
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("relay map: region %d: URL %q is not http(s)://HOST", r.ID, r.URL)
		}
		if _, err := r.Key(); err != nil {
			return fmt.Errorf("relay map: %w", err)
		}
	}
	return nil
}

// LoadMap reads and validates a JSON relay map file.
func LoadMap(path string) (Map, error) {
	var m Map
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("relay map %s: %w", path, err)
	}
	return m, m.Validate()
}

var errClosed = errors.New("relay: closed")
