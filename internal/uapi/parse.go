package uapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/warrenmesh/warren/internal/noise"
)

// MaxLineLen is the longest request line accepted, newline excluded. Longer
// lines are skipped (so the connection stays in sync) and fail the request.
const MaxLineLen = 4096

// maxRequestLines bounds the key=value lines of one set request (about a
// million: a 100k-allowed-IP configuration fits ten times over). Lines past
// it are read and dropped, and the request fails with ENOMEM. It is a
// variable so that tests can lower it.
var maxRequestLines = 1 << 20

// ErrIncomplete is wrapped (together with the read error) by ParseSet's
// error when the stream ended or failed before the request's blank line.
var ErrIncomplete = errors.New("uapi: incomplete request")

// readLine reads one '\n'-terminated line, reusing buf, and returns it
// without the newline. A line longer than MaxLineLen is read to its end and
// returned as long=true with no content. err is io.EOF only when the stream
// ended before any byte of the line; a partial final line gives
// io.ErrUnexpectedEOF.
func readLine(r *bufio.Reader, buf []byte) (line []byte, long bool, err error) {
	buf = buf[:0]
	n := 0
	for {
		frag, err := r.ReadSlice('\n')
		n += len(frag)
		if !long {
			if len(buf)+len(frag) > MaxLineLen+1 {
				long = true
				buf = buf[:0]
			} else {
				buf = append(buf, frag...)
			}
		}
		switch err {
		case nil:
			if long {
				return buf, true, nil
			}
			return buf[:len(buf)-1], false, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			if n == 0 {
				return buf, false, io.EOF
			}
			return buf, long, io.ErrUnexpectedEOF
		default:
			return buf, long, err
		}
	}
}

// skipRequest reads lines up to and including the blank line that ends a
// request and reports how many non-blank lines it dropped.
func skipRequest(r *bufio.Reader, buf []byte) (int, error) {
	dropped := 0
	for {
		line, long, err := readLine(r, buf)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dropped, err
		}
		if !long && len(line) == 0 {
			return dropped, nil
		}
		dropped++
		buf = line
	}
}

// ParseSet reads the body of a "set=1" request (the operation line already
// consumed): key=value lines up to and including the blank line that ends
// the request. Errors are *Error values carrying the errno to report.
//
// After a bad line ParseSet still reads, without interpreting, the rest of
// the request up to its blank line, so the connection stays in step and can
// carry further requests; only the first error is returned. The exception is
// a read error or the stream ending before the blank line: the request is
// then incomplete, nothing of it may be applied, and the returned error wraps
// both ErrIncomplete and the read error (io.ErrUnexpectedEOF at end of
// stream), with errno EPROTO; the caller should drop the connection.
//
// The result is normalised: endpoints are in netip.AddrPort.String form,
// allowed IPs are masked, and a replace_allowed_ips=true line discards the
// allowed IP changes that came before it for that peer. When a peer section
// contains removals ("allowed_ip=-PREFIX") its AllowedIPs and
// RemoveAllowedIPs come out duplicate-free and disjoint, holding the net
// effect of the lines in order, so they can be applied in either order.
func ParseSet(r *bufio.Reader) (*Config, error) {
	p := parser{cfg: &Config{}}
	var buf []byte
	lines := 0
	for {
		line, long, err := readLine(r, buf)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, &Error{Errno: EPROTO, Err: fmt.Errorf("%w: %w", ErrIncomplete, err)}
		}
		buf = line
		if !long && len(line) == 0 {
			break
		}
		lines++
		if p.err != nil {
			continue
		}
		switch {
		case long:
			p.err = Errorf(EPROTO, "line %d longer than %d bytes", lines, MaxLineLen)
		case lines > maxRequestLines:
			p.err = Errorf(ENOMEM, "request longer than %d lines", maxRequestLines)
		default:
			p.err = p.line(line)
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	p.endPeer()
	return p.cfg, nil
}

type parser struct {
	cfg *Config
	err *Error
	// Allowed-IP bookkeeping for the current peer, used once it has a
	// removal: the net action per prefix and the first-seen order.
	aipSlow  bool
	aipAdd   map[netip.Prefix]bool
	aipOrder []netip.Prefix
}

func (p *parser) peer() *PeerConfig {
	if len(p.cfg.Peers) == 0 {
		return nil
	}
	return &p.cfg.Peers[len(p.cfg.Peers)-1]
}

// quote renders untrusted text for an error message, shortened.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

func parseBool(key, v string) (bool, *Error) {
	if v != "true" {
		return false, Errorf(EINVAL, "%s: value must be \"true\", got %s", key, quote(v))
	}
	return true, nil
}

func parseUint(key, v string, bits int) (uint64, *Error) {
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil {
		return 0, Errorf(EINVAL, "%s: invalid %d-bit unsigned number %s", key, bits, quote(v))
	}
	return n, nil
}

var deviceKeys = map[string]bool{"private_key": true, "listen_port": true, "fwmark": true, "replace_peers": true}

var peerKeys = map[string]bool{
	"remove": true, "update_only": true, "preshared_key": true, "endpoint": true,
	"persistent_keepalive_interval": true, "replace_allowed_ips": true,
	"allowed_ip": true, "protocol_version": true,
}

func (p *parser) line(line []byte) *Error {
	k, v, ok := bytes.Cut(line, []byte{'='})
	if !ok {
		return Errorf(EPROTO, "line %s is not key=value", quote(string(line)))
	}
	key, value := string(k), string(v)
	if key == "public_key" {
		return p.startPeer(value)
	}
	peer := p.peer()
	if peer == nil {
		if peerKeys[key] {
			return Errorf(EPROTO, "peer key %s before any public_key", quote(key))
		}
		return p.deviceLine(key, value)
	}
	if deviceKeys[key] {
		return Errorf(EPROTO, "device key %s after a peer section", quote(key))
	}
	return p.peerLine(peer, key, value)
}

func (p *parser) deviceLine(key, value string) *Error {
	c := p.cfg
	switch key {
	case "private_key":
		k, err := noise.ParsePrivateKeyHex(value)
		if err != nil {
			return Errorf(EINVAL, "private_key: not 64 hex digits") // never echo key material
		}
		c.PrivateKey = &k
	case "listen_port":
		n, err := parseUint(key, value, 16)
		if err != nil {
			return err
		}
		port := uint16(n)
		c.ListenPort = &port
	case "fwmark":
		n, err := parseUint(key, value, 32)
		if err != nil {
			return err
		}
		mark := uint32(n)
		c.FwMark = &mark
	case "replace_peers":
		b, err := parseBool(key, value)
		if err != nil {
			return err
		}
		c.ReplacePeers = b
	default:
		return Errorf(EPROTO, "unknown device key %s", quote(key))
	}
	return nil
}

func (p *parser) startPeer(value string) *Error {
	k, err := noise.ParsePublicKeyHex(value)
	if err != nil {
		return Errorf(EINVAL, "public_key: %s is not 64 hex digits", quote(value))
	}
	p.endPeer()
	p.cfg.Peers = append(p.cfg.Peers, PeerConfig{PublicKey: k})
	return nil
}

func (p *parser) peerLine(peer *PeerConfig, key, value string) *Error {
	switch key {
	case "remove":
		b, err := parseBool(key, value)
		if err != nil {
			return err
		}
		peer.Remove = b
	case "update_only":
		b, err := parseBool(key, value)
		if err != nil {
			return err
		}
		peer.UpdateOnly = b
	case "preshared_key":
		k, err := noise.ParsePresharedKeyHex(value)
		if err != nil {
			return Errorf(EINVAL, "preshared_key: not 64 hex digits")
		}
		peer.PresharedKey = &k
	case "endpoint":
		ap, err := netip.ParseAddrPort(value)
		if err != nil {
			return Errorf(EINVAL, "endpoint: %s is not IP:port or [IPv6]:port", quote(value))
		}
		peer.Endpoint = ap.String()
	case "persistent_keepalive_interval":
		n, err := parseUint(key, value, 16)
		if err != nil {
			return err
		}
		ka := uint16(n)
		peer.PersistentKeepalive = &ka
	case "replace_allowed_ips":
		b, err := parseBool(key, value)
		if err != nil {
			return err
		}
		peer.ReplaceAllowedIPs = b
		// Everything before the replacement is moot.
		peer.AllowedIPs, peer.RemoveAllowedIPs = nil, nil
		p.aipSlow, p.aipAdd, p.aipOrder = false, nil, nil
	case "allowed_ip":
		remove := len(value) > 0 && value[0] == '-'
		s := value
		if remove {
			s = s[1:]
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return Errorf(EINVAL, "allowed_ip: %s is not an IP prefix", quote(value))
		}
		p.allowedIP(peer, pfx.Masked(), remove)
	case "protocol_version":
		if value != "1" {
			return Errorf(EINVAL, "protocol_version: only 1 is supported, got %s", quote(value))
		}
	default:
		return Errorf(EPROTO, "unknown peer key %s", quote(key))
	}
	return nil
}

// allowedIP records one allowed_ip line. Without removals the additions are
// kept as they come; the first removal switches the peer to net-effect
// bookkeeping, resolved by endPeer.
func (p *parser) allowedIP(peer *PeerConfig, pfx netip.Prefix, remove bool) {
	if !remove && !p.aipSlow {
		peer.AllowedIPs = append(peer.AllowedIPs, pfx)
		return
	}
	if !p.aipSlow {
		p.aipSlow = true
		p.aipAdd = make(map[netip.Prefix]bool, len(peer.AllowedIPs)+1)
		for _, a := range peer.AllowedIPs {
			if _, seen := p.aipAdd[a]; !seen {
				p.aipOrder = append(p.aipOrder, a)
			}
			p.aipAdd[a] = true
		}
		peer.AllowedIPs = nil
	}
	if _, seen := p.aipAdd[pfx]; !seen {
		p.aipOrder = append(p.aipOrder, pfx)
	}
	p.aipAdd[pfx] = !remove
}

// endPeer finishes the current peer section.
func (p *parser) endPeer() {
	peer := p.peer()
	if peer == nil || !p.aipSlow {
		return
	}
	peer.AllowedIPs, peer.RemoveAllowedIPs = nil, nil
	for _, a := range p.aipOrder {
		if p.aipAdd[a] {
			peer.AllowedIPs = append(peer.AllowedIPs, a)
		} else {
			peer.RemoveAllowedIPs = append(peer.RemoveAllowedIPs, a)
		}
	}
	p.aipSlow, p.aipAdd, p.aipOrder = false, nil, nil
}
