package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// changes makes and times o.changes changes, one at a time.
func (b *bench) changes(ctx context.Context, o runOpts, sims []*simNode, res *result) error {
	kinds := []string{"endpoint", "join", "leave", "delete"}
	var extra *simNode
	var extraCancel context.CancelFunc
	var extraID uint64
	var extraUp chan struct{}
	for k := 0; k < o.changes; k++ {
		kind := kinds[k%len(kinds)]
		if (kind == "leave" || kind == "delete") && extra == nil {
			kind = "endpoint"
		}
		c := &change{kind: kind, at: make([]time.Duration, b.nodes), done: make(chan struct{}), excluded: -1}
		c.left.Store(int64(b.nodes))
		var act func() error
		switch kind {
		case "endpoint":
			n := sims[rand.N(len(sims))]
			n.mu.Lock()
			c.id = n.id
			n.mu.Unlock()
			c.port = uint16(20000 + k)
			n.port = c.port
			ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n.idx >> 16), byte(n.idx >> 8), byte(n.idx)}), c.port)
			act = func() error {
				return n.send(&proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: []netip.AddrPort{ep}}})
			}
		case "join":
			extra = &simNode{b: b, idx: -1, key: nodeKey(b.seed, b.nodes+k), port: 41641}
			c.key = pubkey.Node{PublicKey: extra.key.PublicKey()}
			act = func() error {
				id, err := b.join(ctx, extra)
				extraID = id
				var ectx context.Context
				ectx, extraCancel = context.WithCancel(ctx)
				up := make(chan struct{})
				extraUp = up
				go extra.run(ectx, nil, func() { close(up) })
				return err
			}
		case "leave":
			c.id = extraID
			act = func() error { extraCancel(); return nil }
		case "delete":
			c.id = extraID
			act = func() error { extra = nil; return b.command(fmt.Sprintf("delete %d", extraID)) }
		}
		b.cur.Store(c)
		c.start = time.Now()
		if err := act(); err != nil {
			return fmt.Errorf("change %d (%s): %w", k, kind, err)
		}
		var cr changeResult
		cr.Kind = kind
		select {
		case <-c.done:
		case <-time.After(o.timeout):
			cr.TimedOut = true
		}
		b.cur.Store(nil)
		if kind == "join" { // its stream is open before it leaves
			select {
			case <-extraUp:
			case <-time.After(o.timeout):
				return fmt.Errorf("change %d: the joined node got no full map", k)
			}
		}
		for _, d := range c.at {
			if d > 0 {
				cr.Delivered++
				cr.ToAllMs = max(cr.ToAllMs, ms(d))
				res.deliveries = append(res.deliveries, d)
			}
		}
		if cr.TimedOut {
			fmt.Fprintf(os.Stderr, "controlbench: change %d (%s) reached %d of %d nodes in %v\n", k, kind, cr.Delivered, b.nodes, o.timeout)
		}
		res.PerChange = append(res.PerChange, cr)
		time.Sleep(o.gap)
	}
	res.summarize()
	return nil
}

// join registers n through the protocol with the reusable auth key and
// leaves its session for run to replace with a map stream.
func (b *bench) join(ctx context.Context, n *simNode) (uint64, error) {
	conn, err := n.dialRaw(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := proto.Write(conn, &proto.Message{RegisterRequest: &proto.RegisterRequest{AuthKey: b.authKey, Hostname: "joiner"}}); err != nil {
		return 0, err
	}
	m, err := proto.Read(conn, proto.MaxClientMessage)
	if err != nil {
		return 0, err
	}
	if m.RegisterResponse == nil || m.RegisterResponse.Node == nil {
		return 0, fmt.Errorf("registration refused: %+v", m)
	}
	return m.RegisterResponse.Node.ID, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct returns the p-th percentile (0..100) of sorted durations, in ms.
func pct(s []time.Duration, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1) * p / 100)
	return ms(s[i])
}

func (r *result) summarize() {
	var all []time.Duration
	for _, c := range r.PerChange {
		if !c.TimedOut {
			all = append(all, time.Duration(c.ToAllMs*float64(time.Millisecond)))
		} else {
			r.TimedOut++
		}
	}
	slices.Sort(all)
	slices.Sort(r.deliveries)
	r.ToAll = stats{P50: pct(all, 50), P99: pct(all, 99), Max: pct(all, 100), N: len(all)}
	r.PerNode = stats{P50: pct(r.deliveries, 50), P99: pct(r.deliveries, 99), Max: pct(r.deliveries, 100), N: len(r.deliveries)}
}
