package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/capture"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// captureQueue bounds the packets waiting for one capture's reader; beyond
// it packets are dropped (and counted), never waited for.
const captureQueue = 4096

// maxCaptures bounds the captures running at once.
const maxCaptures = 8

// captureState is the set of live captures. The engine's tap is installed
// while at least one runs; each packet is copied to every capture whose
// filter it passes.
type captureState struct {
	mu      sync.Mutex
	subs    atomic.Pointer[[]*captureSub] // immutable snapshot for the data plane
	dropped atomic.Uint64                 // over all captures
}

type captureSub struct {
	outer  bool
	peer   noise.PublicKey // filter by peer (when byPeer)
	byPeer bool
	addr   netip.Addr // filter by inner address (when valid)
	ch     chan capturedPacket
	// names are the map's peer names when the capture started: the outer
	// tap annotates packets without taking the daemon's lock.
	names map[noise.PublicKey]string
}

type capturedPacket struct {
	t       time.Time
	data    []byte
	comment string
}

// offer queues a copy of pkt without blocking.
func (s *captureSub) offer(st *captureState, cp capturedPacket) {
	select {
	case s.ch <- cp:
	default:
		st.dropped.Add(1)
	}
}

// matchPeer applies the peer filter.
func (s *captureSub) matchPeer(p *device.Peer) bool {
	return !s.byPeer || (p != nil && p.PublicKey() == s.peer)
}

// tapInner is the engine's inner tap: plaintext at the TUN boundary.
func (d *Daemon) tapInner(out bool, p *device.Peer, pkt []byte) {
	subs := d.obs.capture.subs.Load()
	if subs == nil {
		return
	}
	var now time.Time
	for _, s := range *subs {
		if s.outer || !s.matchPeer(p) || (s.addr.IsValid() && !hasAddr(pkt, s.addr)) {
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		s.offer(&d.obs.capture, capturedPacket{t: now, data: slices.Clone(pkt)})
	}
}

// tapOuter is the engine's outer tap: WireGuard messages on the wire,
// annotated with the path they travel.
func (d *Daemon) tapOuter(out bool, p *device.Peer, ep conn.Endpoint, pkt []byte) {
	subs := d.obs.capture.subs.Load()
	if subs == nil {
		return
	}
	var data []byte
	var comment string
	var now time.Time
	for _, s := range *subs {
		if !s.outer || !s.matchPeer(p) {
			continue
		}
		if data == nil {
			now = time.Now()
			data, comment = d.outerRecord(out, p, ep, pkt, s.names)
		}
		s.offer(&d.obs.capture, capturedPacket{t: now, data: data, comment: comment})
	}
}

// outerRecord wraps a WireGuard message in an IP/UDP header between the
// engine's port and the peer's address, with a comment naming the peer and
// the path. It takes no daemon lock (it runs on the data plane).
func (d *Daemon) outerRecord(out bool, p *device.Peer, ep conn.Endpoint, pkt []byte, names map[noise.PublicKey]string) ([]byte, string) {
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), d.eng.Port())
	remote := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if ep != nil && ep.Addr().IsValid() {
		remote = ep.Addr()
	}
	if remote.Addr().Is6() {
		local = netip.AddrPortFrom(netip.IPv6Unspecified(), local.Port())
	}
	dir, src, dst := "in", remote, local
	if out {
		dir, src, dst = "out", local, remote
	}
	comment := dir + " unknown peer"
	if p != nil {
		k := p.PublicKey()
		comment = dir + " " + k.String()
		if name := names[k]; name != "" {
			comment = dir + " " + name
		}
		switch path := d.eng.PeerPath(pubkey.Node{PublicKey: k}); path.Kind {
		case magicsock.PathDirect:
			comment += " via direct " + path.Addr.String()
		case magicsock.PathRelay:
			comment += " via relay"
		case magicsock.PathGuess:
			comment += " via " + path.Addr.String() + " (unconfirmed)"
		}
	}
	return capture.AppendUDP(nil, src, dst, pkt), comment
}

// peerNames maps the current map's peers to their names.
func (d *Daemon) peerNames() map[noise.PublicKey]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := map[noise.PublicKey]string{}
	if d.nm != nil {
		for i := range d.nm.Peers {
			names[d.nm.Peers[i].Key.PublicKey] = d.nm.Peers[i].Name
		}
	}
	return names
}

// hasAddr reports whether an IP packet's source or destination is a.
func hasAddr(pkt []byte, a netip.Addr) bool {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && a.Is4():
		return netip.AddrFrom4([4]byte(pkt[12:16])) == a || netip.AddrFrom4([4]byte(pkt[16:20])) == a
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && a.Is6():
		return netip.AddrFrom16([16]byte(pkt[8:24])) == a || netip.AddrFrom16([16]byte(pkt[24:40])) == a
	}
	return false
}

// addCapture registers s and installs the engine's tap.
func (d *Daemon) addCapture(s *captureSub) error {
	st := &d.obs.capture
	st.mu.Lock()
	defer st.mu.Unlock()
	var cur []*captureSub
	if p := st.subs.Load(); p != nil {
		cur = *p
	}
	if len(cur) >= maxCaptures {
		return fmt.Errorf("%d captures are already running", maxCaptures)
	}
	next := append(slices.Clone(cur), s)
	st.subs.Store(&next)
	d.installTapLocked(next)
	return nil
}

// removeCapture unregisters s; the tap goes when the last capture does.
func (d *Daemon) removeCapture(s *captureSub) {
	st := &d.obs.capture
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.subs.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(x *captureSub) bool { return x == s })
	if len(next) == 0 {
		st.subs.Store(nil)
	} else {
		st.subs.Store(&next)
	}
	d.installTapLocked(next)
}

// installTapLocked sets the engine's tap for subs; captureState.mu held.
func (d *Daemon) installTapLocked(subs []*captureSub) {
	var inner, outer bool
	for _, s := range subs {
		inner = inner || !s.outer
		outer = outer || s.outer
	}
	if !inner && !outer {
		d.eng.SetTap(nil)
		return
	}
	t := &device.Tap{}
	if inner {
		t.Inner = d.tapInner
	}
	if outer {
		t.Outer = d.tapOuter
	}
	d.eng.SetTap(t)
}

// captureFilter resolves a capture's peer argument: a peer of the map (by
// name, DNS name, key or tunnel address), else any IP address (matched
// against inner packets' source and destination).
func (d *Daemon) captureFilter(sub *captureSub, q string) error {
	if q == "" {
		return nil
	}
	d.mu.Lock()
	nm := d.nm
	d.mu.Unlock()
	if nm != nil {
		if p, _, err := resolvePeer(nm, q); err == nil {
			sub.peer, sub.byPeer = p.Key.PublicKey, true
			return nil
		}
	}
	if a, err := netip.ParseAddr(q); err == nil {
		if sub.outer {
			return errors.New("an outer capture filters by peer, not by inner address")
		}
		sub.addr = a.Unmap()
		return nil
	}
	return fmt.Errorf("no peer %q in the network map (see `warren status`)", q)
}

// serveCapture streams a capture until the client goes, or the duration or
// count asked for is reached.
func (d *Daemon) serveCapture(w http.ResponseWriter, r *http.Request) {
	req, err := localapi.ParseCaptureRequest(r.URL.Query())
	if err != nil {
		writeAPIError(w, fmt.Errorf("bad capture request: %v", err))
		return
	}
	sub := &captureSub{outer: req.Outer, ch: make(chan capturedPacket, captureQueue), names: d.peerNames()}
	if err := d.captureFilter(sub, req.Peer); err != nil {
		writeAPIError(w, err)
		return
	}
	if err := d.addCapture(sub); err != nil {
		writeAPIError(w, err)
		return
	}
	defer d.removeCapture(sub)
	d.log.Info("capture started", "peer", req.Peer, "outer", req.Outer)
	defer d.log.Info("capture ended", "peer", req.Peer)

	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if req.Outer {
		err = capture.WritePcapngHeader(w)
	} else {
		err = capture.WritePcapHeader(w)
	}
	if err != nil {
		return
	}
	if fl != nil {
		fl.Flush()
	}
	var stop <-chan time.Time
	if req.Duration > 0 {
		t := time.NewTimer(req.Duration)
		defer t.Stop()
		stop = t.C
	}
	var buf []byte
	n := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case <-stop:
			return
		case cp := <-sub.ch:
			buf = buf[:0]
			// Write what is queued in one go, then flush.
			for {
				if req.Outer {
					buf = capture.AppendPcapngRecord(buf, cp.t, cp.data, cp.comment)
				} else {
					buf = capture.AppendPcapRecord(buf, cp.t, cp.data)
				}
				n++
				if (req.Count > 0 && n >= req.Count) || len(buf) > 1<<20 {
					break
				}
				select {
				case cp = <-sub.ch:
					continue
				default:
				}
				break
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			if req.Count > 0 && n >= req.Count {
				return
			}
		}
	}
}

func writeAPIError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
