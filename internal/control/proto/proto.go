// Package proto is Warren's control protocol above the noiseconn
// transport: length-prefixed JSON messages exchanged on an authenticated
// Noise session.
//
// Every message is a 4-byte big-endian length followed by that many bytes
// of JSON encoding one Message, in which exactly one body field is set. A
// reader refuses a length above its limit before reading the body, so a
// peer cannot make it allocate more than the limit.
//
// Conversation (node = client, Noise initiator):
//
//	node → RegisterRequest{AuthKey, Hostname, Endpoints}
//	server → RegisterResponse{Node | Error}
//
//	node → MapRequest{Endpoints}
//	server → MapResponse{Full}            once, Version 1
//	server → MapResponse{Delta}           for each change, From = last To
//	server → MapResponse{KeepAlive: true} when idle
//	node → EndpointUpdate{Endpoints, Routes?} at any time on the stream
//	server → Error{...}                   then closes, on a refusal
//
//	node → RotateKeyRequest{NewKey, Proof}  (session under the old key)
//	server → RotateKeyResponse{Node | Error}
//
//	node → LogoutRequest{}
//	server → LogoutResponse{Error?}
//
// A RegisterRequest may be followed by a MapRequest on the same
// connection. No message carries a node key: the server binds every request
// to the key authenticated by the Noise handshake (noiseconn.Conn.Peer),
// so a node can only register, read or update itself.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

// Version is the message protocol version carried in every Message. A peer
// refuses messages of another version.
const Version = 1

const (
	// MaxServerMessage bounds messages the server accepts from nodes
	// (registration, endpoint reports): they are small.
	MaxServerMessage = 64 << 10
	// MaxFirstMessage bounds a session's first message, which may be a
	// map request with the digest of the map the node holds (16 bytes a
	// peer, ~25k peers).
	MaxFirstMessage = 512 << 10
	// MaxClientMessage bounds messages a node accepts from the server. A full
	// map of ~10k peers is a few MiB of JSON.
	MaxClientMessage = 32 << 20
	// MaxEndpoints bounds the endpoints a node may report.
	MaxEndpoints = 64
	// MaxHostname bounds the hostname a node may report.
	MaxHostname = 255
	// MaxRoutes bounds the routes a node may advertise.
	MaxRoutes = routeprefix.Max
)

var (
	// ErrTooLarge is returned (wrapped) for a message above the reader's limit.
	ErrTooLarge = errors.New("proto: message too large")
	// ErrMalformed is returned (wrapped) for a message that does not parse or
	// does not set exactly one body.
	ErrMalformed = errors.New("proto: malformed message")
	// ErrVersion is returned (wrapped) for a message of another version.
	ErrVersion = errors.New("proto: unsupported message version")
)

// RegisterRequest joins the session's node key with a pre-auth key, or,
// with Interactive (and no AuthKey), by a person signing in: the server
// answers CodeLoginRequired with a sign-in URL and a registration ID; the
// node asks again with that RegistrationID (the server holds the answer
// until the sign-in completes or a while passes) until it gets its node.
type RegisterRequest struct {
	AuthKey   string           `json:"authKey"`
	Hostname  string           `json:"hostname"`
	Endpoints []netip.AddrPort `json:"endpoints"`
	// Interactive asks for a sign-in URL instead of using an auth key.
	Interactive bool `json:"interactive,omitempty"`
	// ForceReauth asks for a new sign-in even if the key's node is
	// registered and not expired (a re-login: name and addresses stay).
	ForceReauth bool `json:"forceReauth,omitempty"`
	// RegistrationID continues an interactive registration.
	RegistrationID string `json:"registrationID,omitempty"`
}

// RegisterResponse answers a RegisterRequest: the node as it appears in
// its own map (Self), or an error.
type RegisterResponse struct {
	Node  *netmap.Node `json:"node,omitempty"`
	Error string       `json:"error,omitempty"`
	// Code classifies Error for programs; see the Code* constants.
	Code string `json:"code,omitempty"`
	// AuthURL and RegistrationID come with CodeLoginRequired and
	// CodeApprovalRequired: where the person signs in, and what to ask
	// again with.
	AuthURL        string `json:"authURL,omitempty"`
	RegistrationID string `json:"registrationID,omitempty"`
}

// Error codes in RegisterResponse.Code and Error.Code.
const (
	CodeAuthKeyInvalid = "auth_key_invalid"
	CodeAuthKeyExpired = "auth_key_expired"
	CodeAuthKeyUsed    = "auth_key_used"
	CodeNodeKeyInUse   = "node_key_in_use"
	CodeDiscoKeyInUse  = "disco_key_in_use" // another node holds the reported disco key
	CodeNotRegistered  = "not_registered"
	CodeNodeExpired    = "node_expired"
	CodeNodeDeleted    = "node_deleted"
	CodeBadRequest     = "bad_request"
	// Interactive registration (RegisterRequest.Interactive).
	CodeLoginRequired       = "login_required"       // sign in at AuthURL, then ask again
	CodeApprovalRequired    = "approval_required"    // signed in; an admin must approve the node
	CodeRegistrationExpired = "registration_expired" // start again
	CodeLoginUnavailable    = "login_unavailable"    // the server has no sign-in: use an auth key
	CodeInternal            = "internal"
	// CodeUnavailable: the server cannot reach its database (down, or
	// failing over). Nothing was done; the same request may succeed
	// shortly, and clients retry it.
	CodeUnavailable = "unavailable"
)

// MapRequest opens the map stream for the session's node.
type MapRequest struct {
	Endpoints []netip.AddrPort `json:"endpoints"`
	// DiscoKey is the node's current path-probe public key, if it probes.
	DiscoKey *pubkey.Disco `json:"discoKey,omitempty"`
	// Routes are the prefixes the node advertises (warren up
	// --advertise-routes, --advertise-exit-node); nil: unchanged. They
	// reach peers once an admin approves them.
	Routes *[]netip.Prefix `json:"routes,omitempty"`
	// RelayPort is the UDP port the node offers to serve as a peer relay
	// on (warren up --relay-server-port; 0: none); nil: unchanged. Peers
	// use it once an admin approves the node as a peer relay.
	RelayPort *uint16 `json:"relayPort,omitempty"`
	// OS and Version describe the node to admins (the web console): its
	// operating system (runtime.GOOS) and Warren version; empty: not
	// reported.
	OS      string `json:"os,omitempty"`
	Version string `json:"version,omitempty"`
	// Have, if set, is the map the node holds (from this server or
	// another replica, docs/HA.md): the server may answer with a delta
	// from it instead of a full map.
	Have *MapDigest `json:"have,omitempty"`
}

// MapDigest summarizes a node's map for a resume.
type MapDigest struct {
	Version uint64 `json:"version"`
	// Peers is netmap's peer digest (NetworkMap.PeerDigest), base64 in
	// JSON.
	Peers []byte `json:"peers"`
}

// MapResponse is one message of the map stream: the full map once, then
// deltas, or a keepalive.
type MapResponse struct {
	Full      *netmap.NetworkMap `json:"full,omitempty"`
	Delta     *netmap.Delta      `json:"delta,omitempty"`
	KeepAlive bool               `json:"keepAlive,omitempty"`
}

// EndpointUpdate replaces the session node's reported endpoints.
type EndpointUpdate struct {
	Endpoints []netip.AddrPort `json:"endpoints"`
	DiscoKey  *pubkey.Disco    `json:"discoKey,omitempty"`  // nil: unchanged
	Routes    *[]netip.Prefix  `json:"routes,omitempty"`    // advertised routes; nil: unchanged
	RelayPort *uint16          `json:"relayPort,omitempty"` // peer relay port offered (0: none); nil: unchanged
	// WireGuard reports on the WireGuard-only members this node is the
	// gateway of (docs/WIREGUARD.md); nil: unchanged. The server ignores
	// reports on nodes that are not this node's.
	WireGuard *[]WireGuardReport `json:"wireguard,omitempty"`
}

// WireGuardReport is a gateway's view of one of its WireGuard-only
// members: whether its handshake is recent, when it was, and the bytes
// the gateway received from and sent to it.
type WireGuardReport struct {
	ID            uint64    `json:"id"`
	Online        bool      `json:"online"`
	LastHandshake time.Time `json:"lastHandshake"`
	RxBytes       uint64    `json:"rxBytes"`
	TxBytes       uint64    `json:"txBytes"`
}

// MaxWireGuardReports bounds the reports in one EndpointUpdate.
const MaxWireGuardReports = 4096

// CheckWireGuardReports validates a gateway's reports: bounded, IDs
// nonzero and not repeated, times encodable.
func CheckWireGuardReports(rs []WireGuardReport) error {
	if len(rs) > MaxWireGuardReports {
		return fmt.Errorf("%w: %d wireguard reports (limit %d)", ErrMalformed, len(rs), MaxWireGuardReports)
	}
	seen := map[uint64]bool{}
	for _, r := range rs {
		if r.ID == 0 || seen[r.ID] || r.LastHandshake.Year() < 0 || r.LastHandshake.Year() > 9999 ||
			r.RxBytes > 1<<62 || r.TxBytes > 1<<62 {
			return fmt.Errorf("%w: wireguard report for node %d is not valid", ErrMalformed, r.ID)
		}
		seen[r.ID] = true
	}
	return nil
}

// RotateKeyRequest replaces the session node's key with NewKey, keeping the
// node's ID, name and addresses. The session proves the old key; Proof (see
// RotationProof) proves the sender also holds NewKey's private half, so no
// node can take over a key that is not its own.
type RotateKeyRequest struct {
	NewKey pubkey.Node `json:"newKey"`
	Proof  []byte      `json:"proof"`
}

// RotateKeyResponse answers a RotateKeyRequest: the node under its new key,
// or an error. The server closes the old key's streams; the node reconnects
// with its new key.
type RotateKeyResponse struct {
	Node  *netmap.Node `json:"node,omitempty"`
	Error string       `json:"error,omitempty"`
	Code  string       `json:"code,omitempty"`
}

// LogoutRequest removes the session node from the deployment.
type LogoutRequest struct{}

// LogoutResponse answers a LogoutRequest; an empty Error means done.
type LogoutResponse struct {
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// Error is a refusal; the sender closes the connection after it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "control: " + e.Message }

// Message is the envelope of every message on the wire.
type Message struct {
	V                int               `json:"v"`
	RegisterRequest  *RegisterRequest  `json:"registerRequest,omitempty"`
	RegisterResponse *RegisterResponse `json:"registerResponse,omitempty"`
	MapRequest       *MapRequest       `json:"mapRequest,omitempty"`
	MapResponse      *MapResponse      `json:"mapResponse,omitempty"`
	EndpointUpdate   *EndpointUpdate   `json:"endpointUpdate,omitempty"`
	Error            *Error            `json:"error,omitempty"`

	RotateKeyRequest  *RotateKeyRequest  `json:"rotateKeyRequest,omitempty"`
	RotateKeyResponse *RotateKeyResponse `json:"rotateKeyResponse,omitempty"`
	LogoutRequest     *LogoutRequest     `json:"logoutRequest,omitempty"`
	LogoutResponse    *LogoutResponse    `json:"logoutResponse,omitempty"`
}

func (m *Message) bodies() int {
	n := 0
	for _, set := range []bool{m.RegisterRequest != nil, m.RegisterResponse != nil, m.MapRequest != nil,
		m.MapResponse != nil, m.EndpointUpdate != nil, m.Error != nil,
		m.RotateKeyRequest != nil, m.RotateKeyResponse != nil, m.LogoutRequest != nil, m.LogoutResponse != nil} {
		if set {
			n++
		}
	}
	return n
}

// Encode returns the framed encoding of m (length prefix included). It sets
// m.V to Version.
func Encode(m *Message) ([]byte, error) {
	m.V = Version
	if m.bodies() != 1 {
		return nil, fmt.Errorf("%w: %d bodies set", ErrMalformed, m.bodies())
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("proto: encode: %w", err)
	}
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	return out, nil
}

// Write encodes m and writes it with a single Write call, so concurrent
// Writes on a noiseconn.Conn never interleave.
func Write(w io.Writer, m *Message) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Read reads one message of at most max bytes of JSON.
func Read(r io.Reader, max int) (*Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return Decode(b)
}

// Decode parses the JSON body of one message (without length prefix).
func Decode(b []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if m.V != Version {
		return nil, fmt.Errorf("%w: %d (this side speaks %d)", ErrVersion, m.V, Version)
	}
	if m.bodies() != 1 {
		return nil, fmt.Errorf("%w: %d bodies set", ErrMalformed, m.bodies())
	}
	if m.MapResponse != nil {
		r := m.MapResponse
		k := 0
		if r.Full != nil {
			k++
			if err := r.Full.Validate(); err != nil {
				return nil, fmt.Errorf("%w: full map: %v", ErrMalformed, err)
			}
		}
		if r.Delta != nil {
			k++
			if err := checkDelta(r.Delta); err != nil {
				return nil, err
			}
		}
		if r.KeepAlive {
			k++
		}
		if k != 1 {
			return nil, fmt.Errorf("%w: map response sets %d of full, delta, keepAlive", ErrMalformed, k)
		}
	}
	if r := m.RotateKeyResponse; r != nil && r.Node != nil {
		if err := checkNode(r.Node); err != nil {
			return nil, fmt.Errorf("%w: node: %v", ErrMalformed, err)
		}
	}
	if r := m.RotateKeyRequest; r != nil && len(r.Proof) != ProofSize {
		return nil, fmt.Errorf("%w: rotation proof of %d bytes", ErrMalformed, len(r.Proof))
	}
	if r := m.RegisterResponse; r != nil && r.Node != nil {
		if err := checkNode(r.Node); err != nil {
			return nil, fmt.Errorf("%w: node: %v", ErrMalformed, err)
		}
	}
	return &m, nil
}

// checkNode validates one node as netmap.NetworkMap.Validate would.
func checkNode(n *netmap.Node) error {
	return (&netmap.NetworkMap{Self: *n}).Validate()
}

func timeOK(t *time.Time) bool {
	if t == nil {
		return true
	}
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// checkDelta validates the nodes and times a delta carries; whether it fits
// a map is netmap.Apply's job.
func checkDelta(d *netmap.Delta) error {
	if d.Self != nil {
		if err := checkNode(d.Self); err != nil {
			return fmt.Errorf("%w: delta self: %v", ErrMalformed, err)
		}
	}
	for i := range d.PeersAdded {
		if err := checkNode(&d.PeersAdded[i]); err != nil {
			return fmt.Errorf("%w: delta peer: %v", ErrMalformed, err)
		}
	}
	for i := range d.PeersChanged {
		if c := &d.PeersChanged[i]; !timeOK(c.LastSeen) || !timeOK(c.Expiry) {
			return fmt.Errorf("%w: delta peer %d: time out of range", ErrMalformed, c.ID)
		}
	}
	return nil
}

// CheckEndpoints validates endpoints reported by a node.
func CheckEndpoints(eps []netip.AddrPort) error {
	if len(eps) > MaxEndpoints {
		return fmt.Errorf("%w: %d endpoints (limit %d)", ErrMalformed, len(eps), MaxEndpoints)
	}
	for _, e := range eps {
		if !e.IsValid() || e.Port() == 0 || e.Addr().Zone() != "" {
			return fmt.Errorf("%w: endpoint %s is not valid", ErrMalformed, e)
		}
	}
	return nil
}

// CheckRoutes validates routes advertised by a node: at most MaxRoutes
// canonical prefixes (address bits beyond the length zero), no zones, no
// IPv4-mapped IPv6.
func CheckRoutes(routes []netip.Prefix) error {
	if len(routes) > MaxRoutes {
		return fmt.Errorf("%w: %d routes (limit %d)", ErrMalformed, len(routes), MaxRoutes)
	}
	for _, p := range routes {
		if err := routeprefix.Check(p); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return nil
}
