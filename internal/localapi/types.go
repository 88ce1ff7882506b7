package localapi

import (
	"net/netip"
	"time"
)

// Backend states reported in Status.BackendState.
const (
	StateNoState    = "NoState"    // daemon starting
	StateNeedsLogin = "NeedsLogin" // not registered with a server
	StateStopped    = "Stopped"    // registered, but `warren down`
	StateStarting   = "Starting"   // registered and up, no map yet
	StateRunning    = "Running"    // up with a network map
)

// Status is the daemon's view of itself and its peers.
type Status struct {
	BackendState string       `json:"backendState"`
	ServerURL    string       `json:"serverURL,omitempty"`
	ServerKey    string       `json:"serverKey,omitempty"`
	Domain       string       `json:"domain,omitempty"`
	TUN          string       `json:"tun"`
	ListenPort   uint16       `json:"listenPort"`
	Self         *PeerStatus  `json:"self,omitempty"`
	Peers        []PeerStatus `json:"peers"`
	// Connected reports whether the control stream is up; a node keeps
	// working on its last map while it is not.
	Connected bool `json:"connected"`
	// AcceptDNS reports whether the host resolver points at MagicDNS.
	AcceptDNS bool `json:"acceptDNS"`
	// Health lists problems worth a user's attention, one line each.
	Health []string `json:"health,omitempty"`
	// ServerKeyFetched is set only in the answer to an Up that pinned the
	// key the server itself sent (trust on first use, no --server-key):
	// the scheme it came over, "http" (anyone on the path could have
	// replaced it) or "https".
	ServerKeyFetched string `json:"serverKeyFetched,omitempty"`
	// AuthURL is where a person signs in to add this node, while an
	// interactive registration (up without an auth key) waits.
	AuthURL string `json:"authURL,omitempty"`
}

// PeerStatus is one node (self or a peer) in a Status.
type PeerStatus struct {
	ID          uint64           `json:"id"`
	Name        string           `json:"name"`    // DNS label
	DNSName     string           `json:"dnsName"` // name.domain
	User        string           `json:"user"`
	PublicKey   string           `json:"publicKey"`
	Addresses   []netip.Addr     `json:"addresses"`
	AllowedIPs  []netip.Prefix   `json:"allowedIPs,omitempty"`
	Endpoints   []netip.AddrPort `json:"endpoints"` // as reported to the server
	CurrentAddr string           `json:"curAddr,omitempty"`
	// Path is how packets travel to the peer: "direct" (a probed UDP
	// address, PathAddr, last probe PathRTT), "relay" (region PathRelay),
	// "peer-relay" (through the peer relay node PathRelay, UDP),
	// "guess" (an address not yet confirmed by a probe) or "none".
	Path string `json:"path,omitempty"`
	// Via names the gateway of a WireGuard-only member (docs/WIREGUARD.md).
	Via string `json:"via,omitempty"`
	// PathReason says why the path is not direct: "udp-blocked",
	// "no-probe-key", "no-candidate", "probes-unanswered" or "not-probed"
	// (magicsock.PathReason); empty when direct.
	PathReason    string        `json:"pathReason,omitempty"`
	PathAddr      string        `json:"pathAddr,omitempty"`
	PathRelay     string        `json:"pathRelay,omitempty"`
	PathRTT       time.Duration `json:"pathRTT,omitempty"`
	PathJitter    time.Duration `json:"pathJitter,omitempty"` // smoothed variation of probe RTTs
	Online        bool          `json:"online"`
	LastSeen      time.Time     `json:"lastSeen,omitzero"`
	LastHandshake time.Time     `json:"lastHandshake,omitzero"`
	RxBytes       uint64        `json:"rxBytes"`
	TxBytes       uint64        `json:"txBytes"`
	// TrafficReportedAt is set for a WireGuard-only member of another
	// gateway: RxBytes and TxBytes are then the traffic its gateway (Via)
	// reported at that time (received from and sent to the member), as
	// the server publishes it, at most once a minute by default
	// (docs/WIREGUARD.md).
	TrafficReportedAt time.Time `json:"trafficReportedAt,omitzero"`
	Expiry            time.Time `json:"expiry,omitzero"`
}

// UpRequest asks the daemon to join (first time, or with ForceReauth) and
// to run. With no AuthKey it just brings an already registered node up.
type UpRequest struct {
	ServerURL   string `json:"serverURL,omitempty"`
	ServerKey   string `json:"serverKey,omitempty"` // pin this key instead of fetching it
	AuthKey     string `json:"authKey,omitempty"`
	Hostname    string `json:"hostname,omitempty"`
	ForceReauth bool   `json:"forceReauth,omitempty"`
	// AcceptDNS, when set, turns pointing the host resolver at the node's
	// MagicDNS on or off (kept across restarts); nil leaves it as it was.
	AcceptDNS *bool `json:"acceptDNS,omitempty"`
}

// PingRequest asks the daemon to ping a peer over the tunnel.
type PingRequest struct {
	Peer     string        `json:"peer"` // name, DNS name or tunnel address
	Count    int           `json:"count"`
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"` // per probe
}

// PingResult is one probe's outcome, streamed as it happens.
type PingResult struct {
	Seq      int           `json:"seq"`
	Peer     string        `json:"peer"`
	IP       netip.Addr    `json:"ip"`
	Endpoint string        `json:"endpoint,omitempty"` // underlay path the reply came over
	RTT      time.Duration `json:"rtt,omitempty"`
	Err      string        `json:"err,omitempty"`
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// NetcheckReport is what `warren netcheck` shows.
type NetcheckReport struct {
	UDP        bool       `json:"udp"` // a STUN answer came back
	PublicIPv4 netip.Addr `json:"publicIPv4,omitzero"`
	PublicIPv6 netip.Addr `json:"publicIPv6,omitzero"`
	// MappingVaries is "yes" when STUN servers saw one socket on different
	// public ports (a hard NAT: direct paths need the relay), "no" when
	// they agreed, "unknown" with fewer than two answers.
	MappingVaries string           `json:"mappingVariesByDestination"`
	Regions       []NetcheckRegion `json:"regions"`
	// PortMap is what the LAN's gateway answered to port mapping.
	PortMap *NetcheckPortMap `json:"portMap,omitempty"`
	// Peers is the path to each peer now, and why it is not direct.
	Peers []NetcheckPeer `json:"peers,omitempty"`
}

// NetcheckPeer is the path to one peer, as in PeerStatus.
type NetcheckPeer struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	PathReason string `json:"pathReason,omitempty"`
}

// NetcheckPortMap is which port mapping protocols the gateway answered
// and the mapping the node holds.
type NetcheckPortMap struct {
	Disabled bool           `json:"disabled,omitempty"` // daemon --no-portmap
	Gateway  netip.Addr     `json:"gateway,omitzero"`
	PCP      bool           `json:"pcp"`
	NATPMP   bool           `json:"natpmp"`
	UPnP     bool           `json:"upnp"`
	Protocol string         `json:"protocol,omitempty"` // of the mapping held
	Mapped   netip.AddrPort `json:"mapped,omitzero"`
	Error    string         `json:"error,omitempty"` // e.g. no default gateway
}

// NetcheckRegion is one relay region's measurements.
type NetcheckRegion struct {
	ID           int              `json:"id"`
	Code         string           `json:"code"`
	URL          string           `json:"url"`
	RelayLatency time.Duration    `json:"relayLatency,omitempty"` // TCP connect time
	RelayError   string           `json:"relayError,omitempty"`
	STUNLatency  time.Duration    `json:"stunLatency,omitempty"`
	STUNError    string           `json:"stunError,omitempty"`
	Mapped       []netip.AddrPort `json:"mapped,omitempty"`
}
