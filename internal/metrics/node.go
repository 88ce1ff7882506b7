package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/portmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/udp"
)

// Peer names a peer for the per-peer metrics.
type Peer struct {
	Key  pubkey.Node
	Name string
}

// Node is a node agent's collector.
type Node struct {
	Device *device.Device
	Paths  *magicsock.Conn // may be nil
	UDP    *udp.Transport  // may be nil
	TUN    *tun.Stats      // may be nil (no offloads)
	// Peers lists the peers to report (the network map's).
	Peers func() []Peer
	// CaptureDropped counts packets a live capture dropped because its
	// reader was slow; may be nil.
	CaptureDropped func() uint64
	// PortMap returns the gateway port mapping client; may be nil, and
	// may return nil (port mapping off).
	PortMap func() *portmap.Client
	// PeerRelay returns this node's peer relay counters; may be nil, and
	// may return nil (no peer relay served).
	PeerRelay func() *peerrelay.Stats
}

var (
	peerLabels = []string{"peer", "key"}

	peerRxBytes   = Desc("warren_peer_rx_bytes_total", "Bytes of authenticated WireGuard messages received from the peer.", peerLabels...)
	peerTxBytes   = Desc("warren_peer_tx_bytes_total", "Bytes of WireGuard messages sent to the peer.", peerLabels...)
	peerRxPackets = Desc("warren_peer_rx_packets_total", "Authenticated transport messages received from the peer (keepalives included).", peerLabels...)
	peerTxPackets = Desc("warren_peer_tx_packets_total", "Transport messages sent to the peer (keepalives included).", peerLabels...)
	peerHandshake = Desc("warren_peer_last_handshake_timestamp_seconds", "Unix time of the peer's last completed handshake (absent before the first).", peerLabels...)
	peerHSAge     = Desc("warren_peer_handshake_age_seconds", "Seconds since the peer's last completed handshake (absent before the first).", peerLabels...)
	peerPath      = Desc("warren_peer_path", "1 for the peer's current path kind (direct, peer-relay, relay, guess, none), 0 for the others.", append(peerLabels, "path")...)
	peerPathWhy   = Desc("warren_peer_path_not_direct", "1 with the reason the peer's path is not direct (udp-blocked, no-probe-key, no-candidate, probes-unanswered, not-probed); absent when direct.", append(peerLabels, "reason")...)
	peerRTT       = Desc("warren_peer_path_rtt_seconds", "RTT of the last probe on the peer's direct path (absent when not direct).", peerLabels...)
	peerJitter    = Desc("warren_peer_path_jitter_seconds", "Smoothed variation of probe RTTs on the peer's direct path (absent when not direct).", peerLabels...)

	drops         = Desc("warren_drops_total", "Packets the engine dropped, by reason.", "reason")
	handshakes    = Desc("warren_handshakes_total", "Handshakes, by event: initiations sent, completed (either role), cookie replies sent, cookie replies taken (a peer under load).", "event")
	queueDepth    = Desc("warren_queue_depth", "Entries waiting in the engine's device-wide queues (batches for encrypt/decrypt, messages for handshake).", "queue")
	udpDatagrams  = Desc("warren_udp_datagrams_total", "UDP datagrams moved by the transport, by direction.", "dir")
	udpMessages   = Desc("warren_udp_messages_total", "sendmmsg/recvmmsg entries (a GSO/GRO message carries several datagrams), by direction: datagrams/messages is the mean offload batch.", "dir")
	udpOffloaded  = Desc("warren_udp_offload_messages_total", "Messages that carried several datagrams (GSO on send, GRO on receive).", "dir")
	discoMessages = Desc("warren_disco_messages_total", "Path probes (disco messages), by event: sent, opening (of sent: pings with a short time to live that open the node's own NAT before the peer probes back), received, bad, replayed (pings refused as replays), rate_limited (dropped by the per-source limit).", "event")
	roamRefused   = Desc("warren_roam_refused_total", "Authenticated packet batches that arrived labelled with another peer's path; the sender's endpoint did not move there.")
	peerRelayPkts = Desc("warren_peer_relay_packets_total", "Packets through peer relays as a client, by event: sent, received, dropped (no session of ours), refused (allocations the relay refused), bad (control messages that did not open or answered nothing).", "event")
	relayPackets  = Desc("warren_relay_packets_total", "Packets through the relay, by event: sent, received, dropped (the path layer closed), waited (received while the engine was behind: the relay connection's reader waited for it), send_dropped (the relay send queue full).", "event")
	tunCalls      = Desc("warren_tun_calls_total", "Reads and writes of the TUN device in offload mode, by direction.", "dir")
	tunPackets    = Desc("warren_tun_packets_total", "Packets through the TUN device in offload mode, by direction: packets/calls is the mean offload batch (segments per super-packet read, packets per coalesced write).", "dir")
	captureDrops  = Desc("warren_capture_dropped_total", "Packets a live capture dropped because its reader was too slow.")
)

// dropReasons maps each reason label onto its device.Stats counter.
var dropReasons = []struct {
	reason string
	get    func(*device.Stats) uint64
}{
	{"bad_mac", func(s *device.Stats) uint64 { return s.DropDecrypt.Load() }},
	{"replay", func(s *device.Stats) uint64 { return s.DropReplay.Load() }},
	{"no_route", func(s *device.Stats) uint64 { return s.DropNoRoute.Load() }},
	{"policy", func(s *device.Stats) uint64 { return s.DropPolicy.Load() }},
	{"destination", func(s *device.Stats) uint64 { return s.DropDestination.Load() }},
	{"no_session", func(s *device.Stats) uint64 { return s.DropNoSession.Load() }},
	{"queue_full", func(s *device.Stats) uint64 { return s.DropQueueFull.Load() }},
	{"handshake_queue_full", func(s *device.Stats) uint64 { return s.DropHandshakeQueue.Load() }},
	{"handshake_bad_mac1", func(s *device.Stats) uint64 { return s.DropMAC1.Load() }},
	{"handshake_need_cookie", func(s *device.Stats) uint64 { return s.DropNeedCookie.Load() }},
	{"handshake_rate_limited", func(s *device.Stats) uint64 { return s.DropRateLimited.Load() }},
	{"handshake_unknown_peer", func(s *device.Stats) uint64 { return s.DropUnknownPeer.Load() }},
	{"handshake_invalid", func(s *device.Stats) uint64 { return s.DropHandshake.Load() }},
	{"handshake_replay", func(s *device.Stats) uint64 { return s.DropTimestamp.Load() }},
	{"handshake_flood", func(s *device.Stats) uint64 { return s.DropFlood.Load() }},
	{"cookie_reply", func(s *device.Stats) uint64 { return s.DropCookieReply.Load() }},
	{"invalid", func(s *device.Stats) uint64 { return s.DropInvalid.Load() }},
	{"expired_key", func(s *device.Stats) uint64 { return s.DropExpiredKey.Load() }},
	{"source_addr", func(s *device.Stats) uint64 { return s.DropSourceAddr.Load() }},
	{"bad_inner", func(s *device.Stats) uint64 { return s.DropBadInner.Load() }},
	{"staged", func(s *device.Stats) uint64 { return s.DropStaged.Load() }},
}

var pathKinds = []magicsock.PathKind{magicsock.PathDirect, magicsock.PathPeerRelay, magicsock.PathRelay, magicsock.PathGuess, magicsock.PathNone}

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{peerRxBytes, peerTxBytes, peerRxPackets, peerTxPackets, peerHandshake, peerHSAge,
		peerPath, peerPathWhy, peerRTT, peerJitter, drops, handshakes, queueDepth, udpDatagrams, udpMessages, udpOffloaded,
		discoMessages, roamRefused, relayPackets, peerRelayPkts, captureDrops, tunCalls, tunPackets} {
		ch <- d
	}
	describePortMap(ch)
	ch <- peerRelayServed
}

// Collect implements prometheus.Collector.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := time.Now()
	if n.Peers != nil {
		seen := map[pubkey.Node]bool{}
		for _, p := range n.Peers() {
			if seen[p.Key] {
				continue
			}
			seen[p.Key] = true
			s, ok := n.Device.PeerStats(p.Key.PublicKey)
			if !ok {
				continue
			}
			l := []string{p.Name, p.Key.String()}
			counter(peerRxBytes, s.RxBytes, l...)
			counter(peerTxBytes, s.TxBytes, l...)
			counter(peerRxPackets, s.RxPackets, l...)
			counter(peerTxPackets, s.TxPackets, l...)
			if !s.LastHandshake.IsZero() {
				gauge(peerHandshake, float64(s.LastHandshake.UnixNano())/1e9, l...)
				gauge(peerHSAge, now.Sub(s.LastHandshake).Seconds(), l...)
			}
			if n.Paths != nil {
				path := n.Paths.PeerPath(p.Key)
				for _, k := range pathKinds {
					v := 0.0
					if path.Kind == k {
						v = 1
					}
					gauge(peerPath, v, append(l, string(k))...)
				}
				if path.Reason != magicsock.ReasonNone {
					gauge(peerPathWhy, 1, append(l, string(path.Reason))...)
				}
				if path.Kind == magicsock.PathDirect {
					gauge(peerRTT, path.RTT.Seconds(), l...)
					gauge(peerJitter, path.Jitter.Seconds(), l...)
				}
			}
		}
	}
	st := &n.Device.Stats
	for _, r := range dropReasons {
		counter(drops, r.get(st), r.reason)
	}
	counter(handshakes, st.HandshakesSent.Load(), "initiation_sent")
	counter(handshakes, st.HandshakesDone.Load(), "completed")
	counter(handshakes, st.CookieRepliesSent.Load(), "cookie_reply_sent")
	counter(handshakes, st.CookieRepliesTaken.Load(), "cookie_reply_taken")
	counter(roamRefused, st.RoamRefused.Load())
	enc, dec, hs := n.Device.QueueDepths()
	gauge(queueDepth, float64(enc), "encrypt")
	gauge(queueDepth, float64(dec), "decrypt")
	gauge(queueDepth, float64(hs), "handshake")
	if u := n.UDP; u != nil {
		counter(udpDatagrams, u.Stats.SentDatagrams.Load(), "tx")
		counter(udpDatagrams, u.Stats.RecvDatagrams.Load(), "rx")
		counter(udpMessages, u.Stats.SentMessages.Load(), "tx")
		counter(udpMessages, u.Stats.RecvMessages.Load(), "rx")
		counter(udpOffloaded, u.Stats.GSOMessages.Load(), "tx")
		counter(udpOffloaded, u.Stats.GROMessages.Load(), "rx")
	}
	if m := n.Paths; m != nil {
		counter(discoMessages, m.Stats.DiscoSent.Load(), "sent")
		counter(discoMessages, m.Stats.DiscoOpening.Load(), "opening")
		counter(discoMessages, m.Stats.DiscoRecv.Load(), "received")
		counter(discoMessages, m.Stats.DiscoBad.Load(), "bad")
		counter(discoMessages, m.Stats.DiscoReplayed.Load(), "replayed")
		counter(discoMessages, m.Stats.DiscoRateLimited.Load(), "rate_limited")
		counter(relayPackets, m.Stats.RelaySent.Load(), "sent")
		counter(relayPackets, m.Stats.RelayRecv.Load(), "received")
		counter(relayPackets, m.Stats.RelayDrops.Load(), "dropped")
		counter(relayPackets, m.Stats.RelayWaits.Load(), "waited")
		counter(relayPackets, m.Stats.RelaySendDrops.Load(), "send_dropped")
		counter(peerRelayPkts, m.Stats.PeerRelaySent.Load(), "sent")
		counter(peerRelayPkts, m.Stats.PeerRelayRecv.Load(), "received")
		counter(peerRelayPkts, m.Stats.PeerRelayDrops.Load(), "dropped")
		counter(peerRelayPkts, m.Stats.PeerRelayRefused.Load(), "refused")
		counter(peerRelayPkts, m.Stats.PeerRelayBad.Load(), "bad")
	}
	if n.CaptureDropped != nil {
		counter(captureDrops, n.CaptureDropped())
	}
	if n.PortMap != nil {
		collectPortMap(n.PortMap(), ch)
	}
	if n.PeerRelay != nil {
		collectPeerRelay(n.PeerRelay(), ch)
	}
	if t := n.TUN; t != nil {
		counter(tunCalls, t.Reads.Load(), "read")
		counter(tunCalls, t.Writes.Load(), "write")
		counter(tunPackets, t.ReadPackets.Load(), "read")
		counter(tunPackets, t.WritePackets.Load(), "write")
	}
}
