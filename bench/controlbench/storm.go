package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
)

// stormResult is the endpoint storm phase (-storm): K nodes report new
// endpoints at a fixed rate each, far more often than a real node would,
// and we count what that cost the server and every other node.
type stormResult struct {
	StormNodes   int     `json:"stormNodes"`
	RatePerNode  int     `json:"ratePerNode"` // reports per second each
	Seconds      float64 `json:"seconds"`     // reporting time (then a pause of stormSettle)
	ReportsSent  int64   `json:"reportsSent"`
	ServerPhase  phase   `json:"phase"`
	DeltasPerSec float64 `json:"deltasPerSecond"` // received by all nodes, over reporting + settle
	// What the server counted (-1 if it cannot say): reports received,
	// written to the store, merged into a later one.
	ServerReceived int64 `json:"serverReceived"`
	ServerWritten  int64 `json:"serverWritten"`
	ServerMerged   int64 `json:"serverMerged"`
}

// stormSettle is how long the storm phase waits after the last report, for
// what the server merged to go out (its per-node interval is 1 s).
const stormSettle = 2 * time.Second

// serverEndpointStats asks the server child for its endpoint counters.
func (b *bench) serverEndpointStats() (recv, written, merged int64) {
	for _, f := range b.ask("endpointstats", "endpointstats", 3) {
		if f == nil {
			return -1, -1, -1
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		m, _ := strconv.ParseInt(f[2], 10, 64)
		recv, written, merged = recv+r, written+w, merged+m
	}
	return recv, written, merged
}

// storm runs the endpoint storm phase.
func (b *bench) storm(ctx context.Context, o runOpts, sims []*simNode) (*stormResult, error) {
	k := min(o.stormNodes, len(sims))
	r := &stormResult{StormNodes: k, RatePerNode: o.stormRate, Seconds: o.storm.Seconds()}
	fmt.Fprintf(os.Stderr, "controlbench: endpoint storm: %d nodes, %d reports/s each, for %v...\n", k, o.stormRate, o.storm)
	r0, w0, m0 := b.serverEndpointStats()
	p0, self0, c0 := b.phaseStart(), readProc("self"), b.snapCounters()
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := 0; i < k; i++ {
		n := sims[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Second / time.Duration(max(o.stormRate, 1)))
			defer t.Stop()
			for j := 0; ctx.Err() == nil && time.Since(start) < o.storm; j++ {
				ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n.idx >> 16), byte(n.idx >> 8), byte(n.idx)}), uint16(30000+j%30000))
				if err := n.send(&proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: []netip.AddrPort{ep}}}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				sent.Add(1)
				<-t.C
			}
		}()
	}
	wg.Wait()
	time.Sleep(stormSettle)
	elapsed := time.Since(start)
	r.ServerPhase.fill(p0, b.readServers(), self0, readProc("self"), c0, b.snapCounters())
	r.ReportsSent = sent.Load()
	r.DeltasPerSec = float64(r.ServerPhase.Deltas) / elapsed.Seconds()
	r1, w1, m1 := b.serverEndpointStats()
	r.ServerReceived, r.ServerWritten, r.ServerMerged = -1, -1, -1
	if r0 >= 0 && r1 >= 0 {
		r.ServerReceived, r.ServerWritten, r.ServerMerged = r1-r0, w1-w0, m1-m0
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return r, fmt.Errorf("storm: a node could not report: %w", err)
	}
	return r, nil
}

func (r *stormResult) print(w io.Writer, nodes int) {
	fmt.Fprintf(w, "\nendpoint storm: %d nodes × %d reports/s for %.0f s (+%v settle), %d nodes listening\n",
		r.StormNodes, r.RatePerNode, r.Seconds, stormSettle, nodes)
	fmt.Fprintf(w, "  reports sent %d; server received %d, wrote %d to the store, merged %d\n",
		r.ReportsSent, r.ServerReceived, r.ServerWritten, r.ServerMerged)
	fmt.Fprintf(w, "  deltas received by all nodes %d (%.0f/s), payload %.1f MiB\n", r.ServerPhase.Deltas, r.DeltasPerSec, r.ServerPhase.BytesMiB)
	fmt.Fprintf(w, "  server CPU %.2f s, bytes written %.1f MiB; bench (nodes) CPU %.2f s\n",
		r.ServerPhase.ServerCPUSeconds, r.ServerPhase.ServerWriteMiB, r.ServerPhase.BenchCPUSeconds)
}
