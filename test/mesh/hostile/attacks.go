package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
)

// The disco wire format, written from internal/magicsock/disco.go with the
// same public primitives (the attacker does not use magicsock's code):
//
//	"WRNdsc" | sender disco key (32) | nonce (24) | NaCl box of the payload
//	ping        1 | txid (12) | sender node key (32)
//	callMeMaybe 3 | n × (address (16) | port (2))
const (
	discoMagic     = "WRNdsc"
	discoHeaderLen = len(discoMagic) + 32 + 24
	msgPing        = 1
	msgCallMeMaybe = 3
)

// seal builds a disco packet from M to the holder of disco key to.
func (h *hostile) seal(to pubkey.Disco, payload []byte) []byte {
	var nonce [24]byte
	rand.Read(nonce[:])
	pub := h.discoKey.PublicKey()
	out := make([]byte, 0, discoHeaderLen+box.Overhead+len(payload))
	out = append(out, discoMagic...)
	out = append(out, pub[:]...)
	out = append(out, nonce[:]...)
	return box.Seal(out, payload, &nonce, (*[32]byte)(&to.PublicKey), (*[32]byte)(&h.discoKey))
}

func callMeMaybe(addrs []netip.AddrPort) []byte {
	b := []byte{msgCallMeMaybe}
	for _, a := range addrs {
		ip := a.Addr().As16()
		b = append(b, ip[:]...)
		b = binary.BigEndian.AppendUint16(b, a.Port())
	}
	return b
}

func (h *hostile) ping() []byte { return pingAs(pubkey.Node{PublicKey: h.nodeKey.PublicKey()}) }

// pingAs is a ping payload naming node key k as its sender.
func pingAs(k pubkey.Node) []byte {
	b := make([]byte, 1+12, 1+12+32)
	b[0] = msgPing
	rand.Read(b[1:13])
	return append(b, k.PublicKey[:]...)
}

func ipv4(eps []netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, e := range eps {
		if e.Addr().Unmap().Is4() {
			out = append(out, netip.AddrPortFrom(e.Addr().Unmap(), e.Port()))
		}
	}
	return out
}

// rawSender sends IPv4 datagrams with any source address (IP_HDRINCL): the
// lab's LAN, like many real ones, does not filter spoofed sources.
type rawSender struct{ fd int }

func newRawSender() (*rawSender, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return &rawSender{fd: fd}, nil
}

func (r *rawSender) send(src, dst netip.AddrPort, payload []byte) error {
	return syscall.Sendto(r.fd, tuntest.UDPPacket(src, dst, payload), 0, &syscall.SockaddrInet4{Addr: dst.Addr().As4()})
}

func (r *rawSender) close() { syscall.Close(r.fd) }

// claimTick is how often the path claims are repeated: far more often than
// honest heartbeats (1 s), so that a layer that believes the last claim
// believes M almost all the time.
const claimTick = 20 * time.Millisecond

// claim forges path claims for d. For every peer P and every other peer V
// it tells P, sealed with M's own (valid) disco key, that V's endpoints are
// M's: in call-me-maybe messages (mode cmm: directly and through the
// relay), and in disco pings sent from V's endpoints (mode ping: spoofed
// source), the same sealed ping also replayed over and over, plus pings
// from M's own address that name V's node key; mode all does both.
func (h *hostile) claim(mode string, d time.Duration) (string, error) {
	withCMM, withPings := mode == "cmm" || mode == "all", mode == "ping" || mode == "all"
	if !withCMM && !withPings {
		return "", fmt.Errorf("mode %q: want cmm, ping or all", mode)
	}
	uc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return "", err
	}
	defer uc.Close()
	raw, err := newRawSender()
	if err != nil {
		return "", err
	}
	defer raw.close()
	peers := h.peers()
	replays := map[[2]pubkey.Node][]byte{}
	rc := h.relayClient()
	var cmm, relayed, pings, replayed, impersonating, errs int
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(claimTick) {
		for _, p := range peers {
			for _, v := range peers {
				if v.Key == p.Key {
					continue
				}
				msg := h.seal(p.DiscoKey, callMeMaybe(v.Endpoints))
				if withCMM && rc != nil && rc.Send(p.Key, msg) == nil {
					relayed++
				}
				for _, to := range ipv4(p.Endpoints) {
					if withCMM {
						if _, err := uc.WriteToUDPAddrPort(msg, to); err != nil {
							errs++
						} else {
							cmm++
						}
					}
					if !withPings {
						continue
					}
					// From M's own address, naming V's node key.
					if _, err := uc.WriteToUDPAddrPort(h.seal(p.DiscoKey, pingAs(v.Key)), to); err != nil {
						errs++
					} else {
						impersonating++
					}
					for _, from := range ipv4(v.Endpoints) {
						if err := raw.send(from, to, h.seal(p.DiscoKey, h.ping())); err != nil {
							errs++
						} else {
							pings++
						}
						k := [2]pubkey.Node{p.Key, v.Key}
						if replays[k] == nil {
							replays[k] = h.seal(p.DiscoKey, h.ping())
						}
						if err := raw.send(from, to, replays[k]); err != nil {
							errs++
						} else {
							replayed++
						}
					}
				}
			}
		}
	}
	return fmt.Sprintf("peers=%d callmemaybe=%d relayed_callmemaybe=%d spoofed_pings=%d replayed_pings=%d impersonating_pings=%d errors=%d",
		len(peers), cmm, relayed, pings, replayed, impersonating, errs), nil
}

// garbageRate is the disco garbage sent per second, over all peers.
const garbageRate = 5000

// garbage sends malformed disco (and WireGuard-shaped) datagrams to every
// peer's endpoints for d, at garbageRate: random bytes behind the magic,
// boxes under M's key or another peer's key that do not open, truncated
// and oversized boxes, and random messages with WireGuard type bytes.
func (h *hostile) garbage(d time.Duration) (string, error) {
	uc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return "", err
	}
	defer uc.Close()
	peers := h.peers()
	var targets []netip.AddrPort
	for _, p := range peers {
		targets = append(targets, ipv4(p.Endpoints)...)
	}
	if len(targets) == 0 {
		return "", fmt.Errorf("no peer endpoints")
	}
	const tick = 5 * time.Millisecond
	perTick := garbageRate * int(tick) / int(time.Second)
	var sent, errs int
	i := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(tick) {
		for range perTick {
			p := peers[i%len(peers)]
			other := peers[(i+1)%len(peers)]
			pkt := h.garbagePacket(i, p, other)
			to := targets[i%len(targets)]
			if _, err := uc.WriteToUDPAddrPort(pkt, to); err != nil {
				errs++
			} else {
				sent++
			}
			i++
		}
	}
	return fmt.Sprintf("sent=%d errors=%d", sent, errs), nil
}

// garbagePacket is the i-th kind of garbage for peer p (other is another
// peer whose disco key the packet may pretend to come from).
func (h *hostile) garbagePacket(i int, p, other netmap.Node) []byte {
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	header := func(sender pubkey.Disco) []byte {
		b := append([]byte(discoMagic), sender.PublicKey[:]...)
		return append(b, random(24)...)
	}
	n := 1 + int(random(1)[0])
	switch i % 7 {
	case 0: // magic, then noise
		return append([]byte(discoMagic), random(32+24+16+n)...)
	case 1: // M's key, a box that does not open
		return append(header(h.discoPublic()), random(16+n)...)
	case 2: // another peer's key, a box that does not open
		return append(header(other.DiscoKey), random(16+n)...)
	case 3: // a valid ping, truncated
		pkt := h.seal(p.DiscoKey, h.ping())
		return pkt[:discoHeaderLen+int(random(1)[0])%(len(pkt)-discoHeaderLen)]
	case 4: // oversized
		return append(header(h.discoPublic()), random(1400)...)
	case 5: // a box that opens, with a payload no parser accepts
		return h.seal(p.DiscoKey, append([]byte{byte(4 + n%250)}, random(n)...))
	default: // WireGuard type byte, then noise
		b := append([]byte{byte(1 + i%4), 0, 0, 0}, random(28+n)...)
		return b
	}
}

// Spoofed sources besides the other peers' tunnel addresses: outside the
// tunnel prefixes, and inside them but held by no node.
var (
	spoofedOutside = []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("2001:db8::1")}
	spoofedUnused  = []netip.Addr{netip.MustParseAddr("100.127.255.254")}
)

// spoof writes UDP packets to every peer's tunnel addresses (IPv4 and
// IPv6) on port into M's engine, so they travel over M's valid WireGuard
// sessions: from every other peer's tunnel address of the same family,
// from addresses outside the tunnel prefixes and from an unassigned
// tunnel address ("hostile-spoof"), and from M's own address
// ("hostile-genuine", which must arrive). Repeated for 3 s, so the first
// ones may wait for the handshakes.
func (h *hostile) spoof(port uint16) string {
	self := h.selfAddrs()
	peers := h.peers()
	var spoofed, genuine int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, v := range peers {
			for _, dp := range v.Addresses {
				dst := dp.Addr()
				to := netip.AddrPortFrom(dst, port)
				srcs := append(slices.Clone(spoofedOutside), spoofedUnused...)
				for _, o := range peers {
					if o.Key == v.Key {
						continue
					}
					for _, op := range o.Addresses {
						srcs = append(srcs, op.Addr())
					}
				}
				for _, src := range srcs {
					if src.Is4() != dst.Is4() {
						continue
					}
					h.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(src, 40000), to, []byte("hostile-spoof from "+src.String()))
					spoofed++
				}
				for _, src := range self {
					if src.Is4() == dst.Is4() {
						h.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(src, 40000), to, []byte("hostile-genuine from "+src.String()))
						genuine++
					}
				}
			}
		}
	}
	return fmt.Sprintf("spoofed=%d genuine=%d", spoofed, genuine)
}

// flood sends EndpointUpdates on M's map stream for d at rate a second,
// each a change (M's real endpoint plus one that moves), then puts M's
// real endpoint back.
func (h *hostile) flood(d time.Duration, rate int) string {
	if rate <= 0 || rate > 5000 {
		rate = 500
	}
	every := time.Second / time.Duration(rate)
	cc := h.client()
	var sent, errs int
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		fake := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 250, byte(1 + i%250)}), uint16(1024+i%60000))
		if !cc.Connected() {
			errs++ // SetEndpoints would only record them
		} else if err := cc.SetEndpoints([]netip.AddrPort{h.self, fake}); err != nil {
			errs++
		} else {
			sent++
		}
		if next := start.Add(time.Duration(i+1) * every); time.Until(next) > 0 {
			time.Sleep(time.Until(next))
		}
	}
	el := time.Since(start)
	cc.SetEndpoints([]netip.AddrPort{h.self})
	return fmt.Sprintf("sent=%d errors=%d seconds=%.1f rate=%.0f", sent, errs, el.Seconds(), float64(sent)/el.Seconds())
}

// stealDisco reports the disco key of the peer named args[0] as M's own
// for d (a new map stream: the key is sent when a stream opens), then
// goes back to M's own key. A server that accepts it hands every node two
// peers with one disco key.
func (h *hostile) stealDisco(args []string, d time.Duration) (string, error) {
	if len(args) == 0 {
		return "", fmt.Errorf("no peer name")
	}
	var victim *netmap.Node
	for _, p := range h.peers() {
		if p.Name == args[0] {
			victim = &p
		}
	}
	if victim == nil {
		return "", fmt.Errorf("no peer %q with a disco key", args[0])
	}
	if err := h.runStream(victim.DiscoKey); err != nil {
		return "", err
	}
	time.Sleep(d)
	if err := h.runStream(h.discoPublic()); err != nil {
		return "", err
	}
	return fmt.Sprintf("victim=%s disco=%s", victim.Name, victim.DiscoKey), nil
}

// beyond widens M's own engine so that the peer named via carries the
// destinations dsts (M decides its own allowed IPs), then sends UDP from
// M's own tunnel address to each dst on port through via for d: packets
// a router must not forward or deliver unless dst lies in its approved
// routes ("hostile-beyond to DST").
func (h *hostile) beyond(via string, port uint16, dsts []netip.Addr, d time.Duration) (string, error) {
	var peer *netmap.Node
	for _, p := range h.peers() {
		if p.Name == via {
			peer = &p
			break
		}
	}
	if peer == nil {
		return "", fmt.Errorf("no peer named %q", via)
	}
	src := h.selfAddr()
	if !src.IsValid() {
		return "", fmt.Errorf("no IPv4 tunnel address")
	}
	cfg := &uapi.Config{Peers: []uapi.PeerConfig{{PublicKey: peer.Key.PublicKey, UpdateOnly: true}}}
	for _, dst := range dsts {
		cfg.Peers[0].AllowedIPs = append(cfg.Peers[0].AllowedIPs, netip.PrefixFrom(dst, dst.BitLen()))
	}
	if err := h.dev.Apply(cfg); err != nil {
		return "", fmt.Errorf("widen allowed IPs: %v", err)
	}
	sent := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, dst := range dsts {
			h.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(dst, port), []byte("hostile-beyond to "+dst.String()))
			sent++
		}
	}
	return fmt.Sprintf("sent=%d", sent), nil
}
