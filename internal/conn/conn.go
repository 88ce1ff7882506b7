// Package conn owns the datagram transport contract between the WireGuard
// engine and the network: a batch Transport that moves sealed WireGuard
// messages to and from opaque Endpoints. A UDP socket implements it today
// (package udp); a path layer choosing between direct and relayed paths will
// implement it later without the engine noticing.
package conn

import (
	"errors"
	"net/netip"
)

// ErrClosed is returned by receive functions once the transport is closed.
var ErrClosed = errors.New("conn: transport closed")

// Endpoint is where a peer's datagrams go. The engine treats it as opaque,
// apart from comparing it with == : a Transport must return the same
// Endpoint value (e.g. the same pointer) for the same remote address for as
// long as it is open, so that roaming can be detected without allocation.
type Endpoint interface {
	// String is the endpoint in the form the configuration protocol uses,
	// e.g. "198.18.0.1:51820" or "[fd00::1]:51820".
	String() string
	// Addr is the remote address for display and per-source rate limiting.
	// A transport without IP addresses returns a stable synthetic one.
	Addr() netip.AddrPort
}

// ReceiveFunc receives a batch of datagrams: packet i into bufs[i] (from
// offset 0), its length in sizes[i] and its source in eps[i]. It returns the
// number of packets; it blocks until at least one arrives. After Close it
// returns an error wrapping net.ErrClosed or ErrClosed.
type ReceiveFunc func(bufs [][]byte, sizes []int, eps []Endpoint) (n int, err error)

// PeerAware is implemented by endpoints a transport hands out for sources
// it cannot yet attribute to a peer (a path layer seeing a new address).
// Once the engine has authenticated a packet from such an endpoint as
// coming from the peer with public key key, it calls FromPeer and uses the
// endpoint returned (the peer's own) from then on. For the transport this
// is a hint, not a proof of where the peer is: an authenticated packet can
// be replayed from anywhere, so a path layer should probe the address
// before it binds it to the peer.
type PeerAware interface {
	FromPeer(key [32]byte) Endpoint
}

// PeerEndpoint is implemented by endpoints that stand for one peer rather
// than for an address (a path layer's). The engine never lets a packet
// authenticated by one peer move that peer onto an endpoint standing for
// another: a transport may label a datagram wrongly (an address two peers
// claim), the engine's keys decide who sent it.
type PeerEndpoint interface {
	PeerKey() [32]byte
}

// Transport is a batch datagram transport.
type Transport interface {
	// Open binds to port (0 picks one) and returns the receive functions to
	// be run each by its own goroutine (e.g. one per address family), and the
	// port actually bound.
	Open(port uint16) (fns []ReceiveFunc, actualPort uint16, err error)
	// Close closes the transport; blocked receive functions return.
	// The transport can be opened again after Close.
	Close() error
	// SetMark sets the firewall mark of outgoing packets (Linux SO_MARK).
	SetMark(mark uint32) error
	// Send sends each bufs[i] as one datagram to ep.
	Send(bufs [][]byte, ep Endpoint) error
	// ParseEndpoint turns the configuration protocol's endpoint string into
	// an Endpoint (resolving nothing: the string is an IP and a port).
	ParseEndpoint(s string) (Endpoint, error)
	// BatchSize is the largest batch Send and ReceiveFunc handle at once.
	BatchSize() int
}

// TTLSender is implemented by transports that can send one datagram with
// a chosen IP time to live (IPv4) or hop limit (IPv6), so that it dies a
// few routers out. The path layer uses it to open its own NAT towards a
// peer with a probe that does not reach the peer's NAT (see magicsock).
type TTLSender interface {
	SendTTL(b []byte, ep Endpoint, ttl int) error
}
