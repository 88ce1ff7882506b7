// Command hostile is the rogue mesh member of Warren's hostile-peer test
// (test/mesh/hostile_test.go). It is built by that test only and never
// shipped.
//
// It joins the mesh like any node — a pre-auth key, its own node key and
// disco key, a map stream and a real WireGuard engine (package device over
// an in-memory TUN and the UDP transport) — and then misuses everything a
// member is given. The test drives it over stdin, one command a line, and
// reads one answer line per command on stdout ("ok CMD key=value ..." or
// "err CMD reason"):
//
//	wait-peers N      wait until the map lists N peers with endpoints and disco keys
//	claim MODE D      for D: forge path claims to every peer: call-me-maybe
//	                  listing other peers' endpoints (MODE cmm), disco pings
//	                  from their addresses (spoofed source) and replays of
//	                  them (MODE ping), or both (MODE all)
//	garbage D         for D: disco garbage at a high rate to every peer
//	spoof PORT        send UDP packets with spoofed inner sources through M's
//	                  own WireGuard sessions to every peer's tunnel address
//	                  on PORT (and one genuine packet each, as a control)
//	steal-disco NAME D  for D: report peer NAME's disco key as M's own on
//	                  M's map stream, then M's own again
//	flood D RATE      for D: EndpointUpdates to the control server, RATE a second
//	idle D            do nothing for D (the test's control phase)
//	quit              leave
//
// Each attack is bounded in time and rate: this is a test.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// hostile is the rogue node's state.
type hostile struct {
	nodeKey  noise.PrivateKey
	discoKey noise.PrivateKey
	self     netip.AddrPort // our underlay endpoint (WireGuard)
	ccfg     client.Config
	dev      *device.Device
	tun      *tuntest.ChannelTUN

	streamMu   sync.Mutex
	cc         *client.Client // the current map stream's client
	stopStream func()         // ends it and waits

	mu         sync.Mutex
	nm         *netmap.NetworkMap
	configured map[pubkey.Node]bool // peers given to the engine
	relay      *relay.Client        // to the map's first relay, once known
}

func main() {
	server := flag.String("server", "", "coordination server URL")
	authKey := flag.String("auth-key", "", "pre-auth key to join with")
	hostname := flag.String("hostname", "m", "node name")
	underlay := flag.String("underlay", "", "this namespace's underlay IPv4 address")
	port := flag.Uint("port", 41641, "WireGuard UDP port")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("hostile: ")
	if *server == "" || *authKey == "" || *underlay == "" {
		log.Fatal("need --server, --auth-key and --underlay")
	}
	h, err := join(*server, *authKey, *hostname, netip.AddrPortFrom(netip.MustParseAddr(*underlay), uint16(*port)))
	if err != nil {
		log.Fatal(err)
	}
	h.serve(os.Stdin, os.Stdout)
}

// join registers the node, starts its engine and keeps its map stream.
func join(server, authKey, hostname string, self netip.AddrPort) (*hostile, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serverKey, err := noiseconn.FetchKey(ctx, server)
	if err != nil {
		return nil, err
	}
	h := &hostile{self: self, configured: map[pubkey.Node]bool{}}
	if h.nodeKey, err = noise.GeneratePrivateKey(); err != nil {
		return nil, err
	}
	if h.discoKey, err = noise.GeneratePrivateKey(); err != nil {
		return nil, err
	}
	h.ccfg = client.Config{ServerURL: server, ServerKey: pubkey.Server{PublicKey: serverKey}, NodeKey: h.nodeKey, Logger: slog.Default()}
	reg, err := client.New(h.ccfg)
	if err != nil {
		return nil, err
	}
	if _, err := reg.Register(ctx, authKey, hostname, []netip.AddrPort{self}); err != nil {
		return nil, err
	}
	h.tun = tuntest.New(1280)
	h.dev = device.New(h.tun, udp.New(), device.Options{Logger: slog.New(slog.DiscardHandler)})
	port := self.Port()
	if err := h.dev.Apply(&uapi.Config{PrivateKey: &h.nodeKey, ListenPort: &port}); err != nil {
		return nil, err
	}
	if err := h.dev.Up(); err != nil {
		return nil, err
	}
	go func() {
		// Whatever honest peers send M is read and thrown away.
		for range h.tun.Outbound {
		}
	}()
	if err := h.runStream(h.discoPublic()); err != nil {
		return nil, err
	}
	return h, nil
}

// discoPublic is M's own disco key.
func (h *hostile) discoPublic() pubkey.Disco { return pubkey.Disco{PublicKey: h.discoKey.PublicKey()} }

// runStream (re)starts M's map stream, reporting disco as M's disco key.
func (h *hostile) runStream(disco pubkey.Disco) error {
	h.streamMu.Lock()
	defer h.streamMu.Unlock()
	if h.stopStream != nil {
		h.stopStream()
	}
	cfg := h.ccfg
	cfg.DiscoKey = disco
	cc, err := client.New(cfg)
	if err != nil {
		return err
	}
	cc.SetEndpoints([]netip.AddrPort{h.self}) // reported when the stream opens
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cc.Run(ctx, h.onMap); ctx.Err() == nil {
			log.Printf("map stream ended: %v", err)
		}
	}()
	h.cc = cc
	h.stopStream = func() { cancel(); <-done }
	return nil
}

// client is the current map stream's client.
func (h *hostile) client() *client.Client {
	h.streamMu.Lock()
	defer h.streamMu.Unlock()
	return h.cc
}

// onMap gives the engine every new peer, at its first reported IPv4
// endpoint, with its own addresses as allowed IPs.
func (h *hostile) onMap(nm *netmap.NetworkMap) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nm = nm
	if h.relay == nil && len(nm.Relays) > 0 {
		// M keeps a relay session too, like any node: claims travel both
		// ways, directly and relayed (authenticated by the relay as M's).
		h.relay = relay.NewClient(nm.Relays[0].URL, nm.Relays[0].Key, h.nodeKey, relay.ClientOptions{})
	}
	cfg := &uapi.Config{}
	for _, p := range nm.Peers {
		if h.configured[p.Key] || len(p.Endpoints) == 0 {
			continue
		}
		ep := p.Endpoints[0]
		for _, e := range p.Endpoints {
			if e.Addr().Is4() {
				ep = e
				break
			}
		}
		h.configured[p.Key] = true
		cfg.Peers = append(cfg.Peers, uapi.PeerConfig{PublicKey: p.Key.PublicKey, Endpoint: ep.String(),
			ReplaceAllowedIPs: true, AllowedIPs: p.AllowedIPs})
	}
	if len(cfg.Peers) > 0 {
		if err := h.dev.Apply(cfg); err != nil {
			log.Printf("configure engine: %v", err)
		}
	}
}

// relayClient is the relay session (nil before the map names a relay).
func (h *hostile) relayClient() *relay.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.relay
}

// peers returns the map's peers that have endpoints and disco keys.
func (h *hostile) peers() []netmap.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nm == nil {
		return nil
	}
	var out []netmap.Node
	for _, p := range h.nm.Peers {
		if len(p.Endpoints) > 0 && !p.DiscoKey.IsZero() {
			out = append(out, p)
		}
	}
	return out
}

// selfAddrs are M's own tunnel addresses.
func (h *hostile) selfAddrs() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []netip.Addr
	if h.nm != nil {
		for _, a := range h.nm.Self.Addresses {
			out = append(out, a.Addr())
		}
	}
	return out
}

// selfAddr is M's own IPv4 tunnel address.
func (h *hostile) selfAddr() netip.Addr {
	for _, a := range h.selfAddrs() {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// serve runs commands from in until quit or EOF.
func (h *hostile) serve(in *os.File, out *os.File) {
	sc := bufio.NewScanner(in)
	reply := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
	}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		cmd := f[0]
		dur := func(i int) time.Duration {
			if len(f) <= i {
				return time.Second
			}
			d, err := time.ParseDuration(f[i])
			if err != nil || d <= 0 || d > 30*time.Second {
				return time.Second
			}
			return d
		}
		num := func(i int) int {
			if len(f) <= i {
				return 0
			}
			n, _ := strconv.Atoi(f[i])
			return n
		}
		switch cmd {
		case "wait-peers":
			n, deadline := num(1), time.Now().Add(20*time.Second)
			for len(h.peers()) < n && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if got := len(h.peers()); got < n {
				reply("err wait-peers only %d peers with endpoints and disco keys", got)
				continue
			}
			disco := h.discoKey.PublicKey()
			reply("ok wait-peers key=%s disco=%s addr=%s endpoint=%s", h.nodeKey.PublicKey(), hex.EncodeToString(disco[:]), h.selfAddr(), h.self)
		case "claim":
			mode := ""
			if len(f) > 1 {
				mode = f[1]
			}
			s, err := h.claim(mode, dur(2))
			if err != nil {
				reply("err claim %v", err)
				continue
			}
			reply("ok claim %s", s)
		case "garbage":
			s, err := h.garbage(dur(1))
			if err != nil {
				reply("err garbage %v", err)
				continue
			}
			reply("ok garbage %s", s)
		case "spoof":
			reply("ok spoof %s", h.spoof(uint16(num(1))))
		case "beyond": // beyond VIA PORT DST[,DST...] DURATION
			var dsts []netip.Addr
			bad := len(f) < 5
			if !bad {
				for _, a := range strings.Split(f[3], ",") {
					ip, err := netip.ParseAddr(a)
					if err != nil {
						bad = true
						break
					}
					dsts = append(dsts, ip)
				}
			}
			if bad {
				reply("err beyond: want VIA PORT DST[,DST...] DURATION")
				continue
			}
			s, err := h.beyond(f[1], uint16(num(2)), dsts, dur(4))
			if err != nil {
				reply("err beyond %v", err)
				continue
			}
			reply("ok beyond %s", s)
		case "steal-disco":
			s, err := h.stealDisco(f[1:], dur(2))
			if err != nil {
				reply("err steal-disco %v", err)
				continue
			}
			reply("ok steal-disco %s", s)
		case "flood":
			reply("ok flood %s", h.flood(dur(1), num(2)))
		case "idle":
			time.Sleep(dur(1))
			reply("ok idle")
		case "quit":
			reply("ok quit")
			return
		default:
			reply("err %s unknown command", cmd)
		}
	}
}
