package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"time"
)

// NAT-PMP (RFC 6886): version 0, UDP to the gateway's port 5351.
const (
	pmpVersion = 0

	pmpOpAddr   = 0 // public address request
	pmpOpMapUDP = 1 // map a UDP port
	pmpOpReply  = 128

	pmpAddrReplyLen = 12 // §3.2
	pmpMapReplyLen  = 16 // §3.3

	// Result codes (§3.5).
	pmpResultOK                 = 0
	pmpResultUnsupportedVersion = 1
)

var (
	errShort       = errors.New("reply too short")
	errVersion     = errors.New("unexpected protocol version")
	errOpcode      = errors.New("unexpected opcode")
	errUnsupported = errors.New("gateway does not speak this protocol version")
)

// resultError is a gateway's refusal, with the protocol's result code.
type resultError struct {
	proto Protocol
	code  int
}

func (e resultError) Error() string {
	return string(e.proto) + " result code " + strconv.Itoa(e.code)
}

// pmpAddrRequest is the public address request (§3.2): version, opcode 0.
func pmpAddrRequest() []byte { return []byte{pmpVersion, pmpOpAddr} }

// pmpMapRequest asks for a UDP mapping of internal port (§3.3); lifetime 0
// with suggested port 0 deletes it.
func pmpMapRequest(internal, suggested uint16, lifetimeSec uint32) []byte {
	b := make([]byte, 12)
	b[0] = pmpVersion
	b[1] = pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:], internal)
	binary.BigEndian.PutUint16(b[6:], suggested)
	binary.BigEndian.PutUint32(b[8:], lifetimeSec)
	return b
}

// pmpAddrReply is a parsed public address response.
type pmpAddrReply struct {
	Result uint16
	Epoch  uint32
	Addr   netip.Addr
}

// pmpMapReply is a parsed mapping response.
type pmpMapReply struct {
	Result      uint16
	Epoch       uint32
	Internal    uint16
	External    uint16
	LifetimeSec uint32
}

// pmpHeader checks version and opcode and returns the result code and
// epoch. A result code other than 0 comes with the header only (8 bytes).
func pmpHeader(b []byte, op byte) (result uint16, epoch uint32, err error) {
	if len(b) < 4 {
		return 0, 0, errShort
	}
	if b[0] != pmpVersion {
		return 0, 0, errVersion
	}
	if b[1] != pmpOpReply+op {
		return 0, 0, errOpcode
	}
	result = binary.BigEndian.Uint16(b[2:])
	if len(b) < 8 {
		if result != pmpResultOK {
			return result, 0, nil // some gateways answer an error with 4 bytes
		}
		return 0, 0, errShort
	}
	return result, binary.BigEndian.Uint32(b[4:]), nil
}

// parsePMPAddrReply parses a public address response; it never panics.
func parsePMPAddrReply(b []byte) (pmpAddrReply, error) {
	res, epoch, err := pmpHeader(b, pmpOpAddr)
	if err != nil {
		return pmpAddrReply{}, err
	}
	r := pmpAddrReply{Result: res, Epoch: epoch}
	if res != pmpResultOK {
		return r, nil
	}
	if len(b) < pmpAddrReplyLen {
		return pmpAddrReply{}, errShort
	}
	r.Addr = netip.AddrFrom4([4]byte(b[8:12]))
	return r, nil
}

// parsePMPMapReply parses a UDP mapping response; it never panics.
func parsePMPMapReply(b []byte) (pmpMapReply, error) {
	res, epoch, err := pmpHeader(b, pmpOpMapUDP)
	if err != nil {
		return pmpMapReply{}, err
	}
	r := pmpMapReply{Result: res, Epoch: epoch}
	if res != pmpResultOK {
		return r, nil
	}
	if len(b) < pmpMapReplyLen {
		return pmpMapReply{}, errShort
	}
	r.Internal = binary.BigEndian.Uint16(b[8:])
	r.External = binary.BigEndian.Uint16(b[10:])
	r.LifetimeSec = binary.BigEndian.Uint32(b[12:])
	return r, nil
}

// mapPMP asks for the gateway's public address, then the UDP mapping.
func (c *Client) mapPMP(ctx context.Context, gw, self netip.Addr, prev *Mapping) (Mapping, error) {
	var addr netip.Addr
	err := c.exchange(ctx, gw, pmpAddrRequest(), func(b []byte) (ignoreReason, error) {
		r, err := parsePMPAddrReply(b)
		if err != nil {
			return pmpIgnore(err), nil
		}
		if r.Result != pmpResultOK {
			return accepted, resultError{NATPMP, int(r.Result)}
		}
		if !c.checkEpoch(NATPMP, r.Epoch) {
			return ignoreEpoch, nil
		}
		addr = r.Addr
		return accepted, nil
	})
	if err != nil {
		return Mapping{}, err
	}
	var m Mapping
	req := pmpMapRequest(c.opts.Port, c.suggestion(prev, NATPMP), lifetimeSec(c.opts.Lifetime))
	err = c.exchange(ctx, gw, req, func(b []byte) (ignoreReason, error) {
		r, err := parsePMPMapReply(b)
		if err != nil {
			return pmpIgnore(err), nil
		}
		if r.Result != pmpResultOK {
			return accepted, resultError{NATPMP, int(r.Result)}
		}
		if r.Internal != c.opts.Port {
			return ignoreMismatch, nil
		}
		if !c.checkEpoch(NATPMP, r.Epoch) {
			return ignoreEpoch, nil
		}
		if r.LifetimeSec == 0 {
			return accepted, errors.New("mapping granted with lifetime 0")
		}
		m = Mapping{External: netip.AddrPortFrom(addr, r.External), Lifetime: time.Duration(r.LifetimeSec) * time.Second}
		return accepted, nil
	})
	return m, err
}

// pmpIgnore sorts a NAT-PMP parse failure: another opcode is a mismatch,
// the rest malformed.
func pmpIgnore(err error) ignoreReason {
	if errors.Is(err, errOpcode) {
		return ignoreMismatch
	}
	return ignoreMalformed
}

// deletePMP removes the mapping: lifetime 0, suggested port 0 (§3.4).
func (c *Client) deletePMP(ctx context.Context, m *Mapping) error {
	return c.exchange(ctx, m.Gateway, pmpMapRequest(c.opts.Port, 0, 0), func(b []byte) (ignoreReason, error) {
		r, err := parsePMPMapReply(b)
		if err != nil {
			return pmpIgnore(err), nil
		}
		if r.Result != pmpResultOK {
			return accepted, resultError{NATPMP, int(r.Result)}
		}
		if r.Internal != c.opts.Port {
			return ignoreMismatch, nil
		}
		return accepted, nil
	})
}

// probePMP reports whether the gateway answers a NAT-PMP public address
// request (with any result code).
func (c *Client) probePMP(ctx context.Context, gw netip.Addr) bool {
	err := c.exchange(ctx, gw, pmpAddrRequest(), func(b []byte) (ignoreReason, error) {
		if _, err := parsePMPAddrReply(b); err != nil {
			return pmpIgnore(err), nil
		}
		return accepted, nil
	})
	return err == nil
}
