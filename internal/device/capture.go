package device

import "github.com/warrenmesh/warren/internal/conn"

// Tap receives copies of packets for a live capture (warren debug
// capture). Its functions run on the data plane's goroutines: they must
// copy what they keep and never block. The packet slices are only valid
// during the call. p is the peer the packet belongs to (nil for an outer
// packet no session claims, such as a handshake from an unknown sender).
type Tap struct {
	// Inner sees plaintext IP packets at the TUN boundary: read from the
	// TUN device (out=true, before encryption) and written to it (out=false,
	// after decryption and the source check). Nil: not captured.
	Inner func(out bool, p *Peer, pkt []byte)
	// Outer sees WireGuard messages as sent to (out=true, after sealing)
	// and received from (out=false, before decryption) the transport, with
	// the endpoint they travel to or came from. Nil: not captured.
	Outer func(out bool, p *Peer, ep conn.Endpoint, pkt []byte)
}

// SetTap installs t (nil removes it). When no tap is set the data plane
// pays one atomic pointer load per batch and allocates nothing.
func (d *Device) SetTap(t *Tap) { d.tap.Store(t) }
