// Package uapi owns the cross-platform WireGuard configuration protocol
// ("get=1"/"set=1" over a unix socket at /var/run/wireguard/IFNAME.sock) that
// wg(8), wg-quick(8) and wireguard-go speak. It parses requests into Config
// values, renders State values, and serves the socket; the engine applies
// configs and reports state through the small Device interface.
package uapi

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

// Config is one "set=1" request, applied as a whole. Nil pointers and empty
// fields mean "leave unchanged".
type Config struct {
	PrivateKey   *noise.PrivateKey // a zero key removes it
	ListenPort   *uint16
	FwMark       *uint32 // 0 removes the mark
	ReplacePeers bool    // remove all peers before applying Peers
	Peers        []PeerConfig
}

// PeerConfig is the part of a Config about one peer, in request order.
type PeerConfig struct {
	PublicKey           noise.PublicKey
	Remove              bool // remove the peer; nothing else applies
	UpdateOnly          bool // change the peer only if it exists
	PresharedKey        *noise.PresharedKey
	Endpoint            string         // "" = unchanged; else "IP:port" or "[IPv6]:port"
	PersistentKeepalive *uint16        // seconds; 0 turns it off
	ReplaceAllowedIPs   bool           // drop existing allowed IPs before adding
	AllowedIPs          []netip.Prefix // to add
	RemoveAllowedIPs    []netip.Prefix // to remove ("allowed_ip=-prefix")
}

// State is the answer to "get=1".
type State struct {
	PrivateKey noise.PrivateKey // zero when unset
	ListenPort uint16
	FwMark     uint32
	Peers      []PeerState
}

// PeerState is one peer in a State.
type PeerState struct {
	PublicKey           noise.PublicKey
	PresharedKey        noise.PresharedKey
	Endpoint            string    // "" when unknown
	LastHandshake       time.Time // zero when none
	RxBytes, TxBytes    uint64
	PersistentKeepalive uint16
	AllowedIPs          []netip.Prefix
	ProtocolVersion     int
}

// Device is what the socket server configures.
type Device interface {
	// Apply applies a whole set request. An error should be an *Error to
	// choose the errno reported to the client; any other error is EINVAL.
	Apply(*Config) error
	// State returns the current configuration and statistics.
	State() State
}

// Errno values reported on the protocol (negated on the wire).
const (
	EPERM      = 1
	EIO        = 5
	ENOMEM     = 12
	EINVAL     = 22
	EADDRINUSE = 98
	EPROTO     = 71
)

// Error is a configuration error with the errno the protocol reports.
type Error struct {
	Errno int64
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("uapi errno %d: %v", e.Errno, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error.
func Errorf(errno int64, format string, args ...any) *Error {
	return &Error{Errno: errno, Err: fmt.Errorf(format, args...)}
}
