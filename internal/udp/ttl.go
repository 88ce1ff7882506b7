package udp

import (
	"encoding/binary"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
)

var _ conn.TTLSender = (*Transport)(nil)

// SendTTL sends b as one datagram to ep with the IPv4 time to live (IPv6
// hop limit) ttl, 1..255. The value is set for this datagram only, by a
// control message (IP_TTL, IPV6_HOPLIMIT): the batches sent on the same
// socket keep the default. It is for the path layer's few opening probes,
// not for data: it allocates and makes one system call per datagram.
func (t *Transport) SendTTL(b []byte, ep conn.Endpoint, ttl int) error {
	e, ok := ep.(*Endpoint)
	if !ok || e == nil {
		return fmt.Errorf("udp: send to an endpoint of type %T", ep)
	}
	if ttl < 1 || ttl > 255 {
		return fmt.Errorf("udp: time to live %d out of 1..255", ttl)
	}
	t.mu.RLock()
	sock, open := t.v6, t.v4 != nil || t.v6 != nil
	if e.is4() {
		sock = t.v4
	}
	t.mu.RUnlock()
	if sock == nil {
		if !open {
			return fmt.Errorf("udp: send: %w", net.ErrClosed)
		}
		return errNoFamily(e)
	}
	if _, _, err := sock.conn.WriteMsgUDPAddrPort(b, ttlControl(sock.v6, ttl), e.ap); err != nil {
		return fmt.Errorf("udp: send with ttl %d: %w", ttl, err)
	}
	t.Stats.SentDatagrams.Add(1)
	t.Stats.SentMessages.Add(1)
	return nil
}

// ttlControl is the control message setting one datagram's time to live.
func ttlControl(v6 bool, ttl int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TTL
	if v6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
	}
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], uint32(ttl))
	return b
}
