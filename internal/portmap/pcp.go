package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
)

// PCP (RFC 6887): version 2, UDP to the gateway's port 5351.
const (
	pcpVersion = 2

	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpReplyBit   = 0x80

	pcpHeaderLen = 24 // §7.1, §7.2
	pcpMapLen    = 36 // §11.1
	pcpMaxLen    = 1100

	pcpProtoUDP = 17

	// Result codes (§7.4).
	pcpResultOK                 = 0
	pcpResultUnsupportedVersion = 1
)

// pcpNonce is a MAP request's mapping nonce (§11.1): a reply must carry it.
type pcpNonce [12]byte

// as16 is an address as PCP writes it: IPv6, or IPv4-mapped IPv6.
func as16(a netip.Addr) [16]byte {
	if a.Is4() {
		return netip.AddrFrom16(a.As16()).As16() // ::ffff:a.b.c.d
	}
	return a.As16()
}

// pcpRequestHeader writes the common request header (§7.1).
func pcpRequestHeader(b []byte, op byte, lifetimeSec uint32, client netip.Addr) {
	b[0] = pcpVersion
	b[1] = op // R bit 0: a request
	binary.BigEndian.PutUint32(b[4:], lifetimeSec)
	c := as16(client)
	copy(b[8:24], c[:])
}

// pcpAnnounceRequest is an ANNOUNCE (§14.1): a gateway that speaks PCP
// answers it with success, the cheapest "do you speak PCP" question.
func pcpAnnounceRequest(client netip.Addr) []byte {
	b := make([]byte, pcpHeaderLen)
	pcpRequestHeader(b, pcpOpAnnounce, 0, client)
	return b
}

// pcpMapRequest asks for a UDP mapping of internal port (§11.1); the
// suggestions may be zero (any). Lifetime 0 deletes the mapping.
func pcpMapRequest(client netip.Addr, nonce pcpNonce, internal, suggestedPort uint16, suggestedIP netip.Addr, lifetimeSec uint32) []byte {
	b := make([]byte, pcpHeaderLen+pcpMapLen)
	pcpRequestHeader(b, pcpOpMap, lifetimeSec, client)
	m := b[pcpHeaderLen:]
	copy(m[0:12], nonce[:])
	m[12] = pcpProtoUDP
	binary.BigEndian.PutUint16(m[16:], internal)
	binary.BigEndian.PutUint16(m[18:], suggestedPort)
	if !suggestedIP.IsValid() {
		suggestedIP = netip.IPv4Unspecified()
	}
	ip := as16(suggestedIP)
	copy(m[20:36], ip[:])
	return b
}

// pcpReply is a parsed PCP response: the header and, for MAP, its payload.
type pcpReply struct {
	Op          byte
	Result      byte
	LifetimeSec uint32
	Epoch       uint32
	// MAP only.
	Nonce    pcpNonce
	Protocol byte
	Internal uint16
	External netip.AddrPort
}

// parsePCPReply parses a PCP response; it never panics. A NAT-PMP-only
// gateway answers a PCP request with a NAT-PMP "unsupported version"
// (version 0, result 1), reported as errUnsupported.
func parsePCPReply(b []byte) (pcpReply, error) {
	if len(b) >= 4 && b[0] == pmpVersion && binary.BigEndian.Uint16(b[2:]) == pmpResultUnsupportedVersion {
		return pcpReply{}, errUnsupported
	}
	if len(b) < pcpHeaderLen || len(b) > pcpMaxLen || len(b)%4 != 0 {
		return pcpReply{}, errShort
	}
	if b[0] != pcpVersion {
		return pcpReply{}, errVersion
	}
	if b[1]&pcpReplyBit == 0 {
		return pcpReply{}, errOpcode // a request, not a response
	}
	r := pcpReply{
		Op:          b[1] &^ pcpReplyBit,
		Result:      b[3],
		LifetimeSec: binary.BigEndian.Uint32(b[4:]),
		Epoch:       binary.BigEndian.Uint32(b[8:]),
	}
	if r.Op != pcpOpMap {
		return r, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		return pcpReply{}, errShort
	}
	m := b[pcpHeaderLen:]
	r.Nonce = pcpNonce(m[0:12])
	r.Protocol = m[12]
	r.Internal = binary.BigEndian.Uint16(m[16:])
	ip := netip.AddrFrom16([16]byte(m[20:36])).Unmap()
	r.External = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(m[18:]))
	return r, nil
}

// pcpCheck parses a reply to a PCP request with opcode op (and, for MAP,
// nonce) and sorts it: not ours (ignored), a refusal, or the answer. A
// NAT-PMP gateway's "unsupported version" ends the exchange.
func (c *Client) pcpCheck(b []byte, op byte, nonce *pcpNonce) (pcpReply, ignoreReason, error) {
	r, err := parsePCPReply(b)
	switch {
	case errors.Is(err, errUnsupported):
		return r, accepted, err
	case err != nil:
		return r, ignoreMalformed, nil
	case r.Op != op:
		return r, ignoreMismatch, nil
	}
	if op == pcpOpMap {
		if r.Nonce != *nonce {
			return r, ignoreNonce, nil
		}
		if r.Protocol != pcpProtoUDP || r.Internal != c.opts.Port {
			return r, ignoreMismatch, nil
		}
	}
	if r.Result != pcpResultOK {
		return r, accepted, resultError{PCP, int(r.Result)}
	}
	return r, accepted, nil
}

// mapPCP asks for (or renews) the mapping with a PCP MAP request.
func (c *Client) mapPCP(ctx context.Context, gw, self netip.Addr, prev *Mapping) (Mapping, error) {
	var suggestIP netip.Addr
	if prev != nil && prev.Protocol == PCP {
		suggestIP = prev.External.Addr()
	}
	req := pcpMapRequest(self, c.nonce, c.opts.Port, c.suggestion(prev, PCP), suggestIP, lifetimeSec(c.opts.Lifetime))
	var m Mapping
	err := c.exchange(ctx, gw, req, func(b []byte) (ignoreReason, error) {
		r, why, err := c.pcpCheck(b, pcpOpMap, &c.nonce)
		if why != accepted || err != nil {
			return why, err
		}
		if !c.checkEpoch(PCP, r.Epoch) {
			return ignoreEpoch, nil
		}
		if r.LifetimeSec == 0 {
			return accepted, errors.New("mapping granted with lifetime 0")
		}
		m = Mapping{External: r.External, Lifetime: time.Duration(r.LifetimeSec) * time.Second}
		return accepted, nil
	})
	return m, err
}

// deletePCP removes the mapping: the same nonce, lifetime 0 (§15).
func (c *Client) deletePCP(ctx context.Context, m *Mapping) error {
	req := pcpMapRequest(m.Internal.Addr(), c.nonce, c.opts.Port, 0, netip.Addr{}, 0)
	return c.exchange(ctx, m.Gateway, req, func(b []byte) (ignoreReason, error) {
		_, why, err := c.pcpCheck(b, pcpOpMap, &c.nonce)
		return why, err
	})
}

// probePCP reports whether the gateway answers a PCP ANNOUNCE.
func (c *Client) probePCP(ctx context.Context, gw, self netip.Addr) bool {
	err := c.exchange(ctx, gw, pcpAnnounceRequest(self), func(b []byte) (ignoreReason, error) {
		_, why, err := c.pcpCheck(b, pcpOpAnnounce, nil)
		return why, err
	})
	var refused resultError
	return err == nil || errors.As(err, &refused) // a refusal is an answer too
}
