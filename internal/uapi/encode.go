package uapi

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// lineWriter appends key=value lines to a buffered writer; the first write
// error sticks and is reported by flush.
type lineWriter struct {
	w       *bufio.Writer
	scratch []byte
}

func newLineWriter(w io.Writer) *lineWriter {
	if bw, ok := w.(*bufio.Writer); ok {
		return &lineWriter{w: bw}
	}
	return &lineWriter{w: bufio.NewWriterSize(w, 32<<10)}
}

func (lw *lineWriter) str(key, value string) {
	lw.w.WriteString(key)
	lw.w.WriteByte('=')
	lw.w.WriteString(value)
	lw.w.WriteByte('\n')
}

func (lw *lineWriter) uint(key string, v uint64) {
	lw.scratch = strconv.AppendUint(lw.scratch[:0], v, 10)
	lw.w.WriteString(key)
	lw.w.WriteByte('=')
	lw.w.Write(lw.scratch)
	lw.w.WriteByte('\n')
}

func (lw *lineWriter) prefix(key string, p netip.Prefix, minus bool) {
	lw.scratch = lw.scratch[:0]
	if minus {
		lw.scratch = append(lw.scratch, '-')
	}
	lw.scratch, _ = p.AppendText(lw.scratch)
	lw.w.WriteString(key)
	lw.w.WriteByte('=')
	lw.w.Write(lw.scratch)
	lw.w.WriteByte('\n')
}

func (lw *lineWriter) flush() error { return lw.w.Flush() }

// WriteState writes s as the body of a "get=1" reply: private_key (when
// set), listen_port, fwmark (when nonzero), then per peer public_key,
// preshared_key (all zeros when none), protocol_version, endpoint (when
// known and valid), last_handshake_time_sec/_nsec (0/0 when never),
// tx_bytes, rx_bytes, persistent_keepalive_interval and the allowed_ip
// lines. It does not write the closing "errno=0" line and blank line.
func WriteState(w io.Writer, s State) error {
	lw := newLineWriter(w)
	if !s.PrivateKey.IsZero() {
		lw.str("private_key", s.PrivateKey.Hex())
	}
	lw.uint("listen_port", uint64(s.ListenPort))
	if s.FwMark != 0 {
		lw.uint("fwmark", uint64(s.FwMark))
	}
	for i := range s.Peers {
		ps := &s.Peers[i]
		lw.str("public_key", ps.PublicKey.Hex())
		lw.str("preshared_key", ps.PresharedKey.Hex())
		version := ps.ProtocolVersion
		if version <= 0 {
			version = 1
		}
		lw.uint("protocol_version", uint64(version))
		// The engine's string is re-rendered so that nothing odd (such as
		// a newline) can reach the wire.
		if ap, err := netip.ParseAddrPort(ps.Endpoint); err == nil {
			lw.str("endpoint", ap.String())
		}
		var sec, nsec int64
		if !ps.LastHandshake.IsZero() && ps.LastHandshake.Unix() >= 0 {
			sec, nsec = ps.LastHandshake.Unix(), int64(ps.LastHandshake.Nanosecond())
		}
		lw.uint("last_handshake_time_sec", uint64(sec))
		lw.uint("last_handshake_time_nsec", uint64(nsec))
		lw.uint("tx_bytes", ps.TxBytes)
		lw.uint("rx_bytes", ps.RxBytes)
		lw.uint("persistent_keepalive_interval", uint64(ps.PersistentKeepalive))
		for _, p := range ps.AllowedIPs {
			if p.IsValid() {
				lw.prefix("allowed_ip", p, false)
			}
		}
	}
	return lw.flush()
}

// WriteSet writes c as a complete "set=1" request, blank line included: the
// inverse of ParseSet. Fields at their "unchanged" value are left out. It
// fails, writing nothing, if a peer's Endpoint is not a valid IP:port or
// one of its prefixes is the invalid zero Prefix.
func WriteSet(w io.Writer, c *Config) error {
	for i := range c.Peers {
		pc := &c.Peers[i]
		if pc.Endpoint != "" {
			if _, err := netip.ParseAddrPort(pc.Endpoint); err != nil {
				return Errorf(EINVAL, "peer %d: endpoint %s is not IP:port", i, quote(pc.Endpoint))
			}
		}
		for _, list := range [][]netip.Prefix{pc.AllowedIPs, pc.RemoveAllowedIPs} {
			for _, p := range list {
				if !p.IsValid() {
					return Errorf(EINVAL, "peer %d: invalid allowed IP prefix", i)
				}
			}
		}
	}
	lw := newLineWriter(w)
	lw.w.WriteString("set=1\n")
	if c.PrivateKey != nil {
		lw.str("private_key", c.PrivateKey.Hex())
	}
	if c.ListenPort != nil {
		lw.uint("listen_port", uint64(*c.ListenPort))
	}
	if c.FwMark != nil {
		lw.uint("fwmark", uint64(*c.FwMark))
	}
	if c.ReplacePeers {
		lw.str("replace_peers", "true")
	}
	for i := range c.Peers {
		pc := &c.Peers[i]
		lw.str("public_key", pc.PublicKey.Hex())
		if pc.Remove {
			lw.str("remove", "true")
		}
		if pc.UpdateOnly {
			lw.str("update_only", "true")
		}
		if pc.PresharedKey != nil {
			lw.str("preshared_key", pc.PresharedKey.Hex())
		}
		if pc.Endpoint != "" {
			ap, _ := netip.ParseAddrPort(pc.Endpoint)
			lw.str("endpoint", ap.String())
		}
		if pc.PersistentKeepalive != nil {
			lw.uint("persistent_keepalive_interval", uint64(*pc.PersistentKeepalive))
		}
		if pc.ReplaceAllowedIPs {
			lw.str("replace_allowed_ips", "true")
		}
		for _, p := range pc.AllowedIPs {
			lw.prefix("allowed_ip", p, false)
		}
		for _, p := range pc.RemoveAllowedIPs {
			lw.prefix("allowed_ip", p, true)
		}
	}
	lw.w.WriteByte('\n')
	if err := lw.flush(); err != nil {
		return fmt.Errorf("uapi: writing set request: %w", err)
	}
	return nil
}
