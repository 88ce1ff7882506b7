package portmap

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// announceEvery bounds how often announcements refresh the mapping: a LAN
// host that forges the gateway's source address gets no more than that.
const announceEvery = 5 * time.Second

// listenAnnouncements receives what a gateway multicasts to 224.0.0.1:5350
// when it restarts or its address changes — a NAT-PMP public address
// notification (RFC 6886 §3.2.1) or an unsolicited PCP ANNOUNCE (RFC 6887
// §14.1.3) — and refreshes the mapping at once (at most every 5 s) instead
// of at the next renewal: the refresh's epoch check sees the restart and
// maps again. Only datagrams from the gateway's address and port count;
// the rest are ignored and counted. The group 224.0.0.1 needs no join.
// Without the port (another program holds it without SO_REUSEPORT) the
// client just renews on its schedule.
func (c *Client) listenAnnouncements(ctx context.Context) {
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		if c.opts.Control != nil {
			if err := c.opts.Control(network, address, rc); err != nil {
				return err
			}
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", c.opts.AnnounceAddr)
	if err != nil {
		c.log.Debug("port mapping: not listening for gateway announcements", "err", err)
		return
	}
	conn := pc.(*net.UDPConn)
	c.annPort.Store(uint32(conn.LocalAddr().(*net.UDPAddr).Port))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	buf := make([]byte, pcpMaxLen+1)
	var last time.Time
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.mu.Lock()
		gw := c.gw
		c.mu.Unlock()
		if !gw.IsValid() || from.Addr().Unmap() != gw || from.Port() != c.opts.ServerPort {
			c.Stats.WrongSource.Add(1)
			continue
		}
		if !isAnnouncement(buf[:n]) {
			c.Stats.Malformed.Add(1)
			continue
		}
		now := c.clk.Now()
		if !last.IsZero() && now.Sub(last) < announceEvery {
			continue
		}
		last = now
		c.log.Info("port mapping: the gateway announced a restart or a new address", "gateway", gw)
		c.poke()
	}
}

// isAnnouncement reports whether b is a NAT-PMP public address response or
// a PCP ANNOUNCE response.
func isAnnouncement(b []byte) bool {
	if len(b) > 0 && b[0] == pmpVersion {
		_, err := parsePMPAddrReply(b)
		return err == nil
	}
	r, err := parsePCPReply(b)
	return err == nil && r.Op == pcpOpAnnounce
}
