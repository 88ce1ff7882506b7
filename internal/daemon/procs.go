package daemon

import (
	"os"
	"runtime"
	"sync"
)

// procsGovernor sets how many Ps the daemon runs on. On a host of one or
// two CPUs with the run-to-completion datapath, the data path runs best on
// one P (a second one only spins beside the two goroutines that carry it:
// docs/PERFORMANCE.md), but a file transfer hashes and writes to disk on
// goroutines of its own, which then take turns with the data path. So the
// daemon runs on one P, and on every CPU while a transfer is in progress.
// GOMAXPROCS set in the environment disables it. The peer API counts an
// upload (drop.Server.Transfer) only once its sender is authenticated, so
// that no one but the user's own machines can change it.
type procsGovernor struct {
	mu      sync.Mutex
	enabled bool
	active  int // transfers in progress
	low     int // Ps when idle
	high    int // Ps during transfers
}

func newProcsGovernor(inline bool) *procsGovernor {
	g := &procsGovernor{high: runtime.GOMAXPROCS(0)}
	if inline && runtime.NumCPU() <= 2 && g.high > 1 && os.Getenv("GOMAXPROCS") == "" {
		g.enabled, g.low = true, 1
		runtime.GOMAXPROCS(g.low)
	}
	return g
}

// begin notes a transfer starting; the function it returns notes its end
// (calling it again does nothing).
func (g *procsGovernor) begin() (end func()) {
	if g == nil || !g.enabled {
		return func() {}
	}
	g.mu.Lock()
	if g.active++; g.active == 1 {
		runtime.GOMAXPROCS(g.high)
	}
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			if g.active--; g.active == 0 {
				runtime.GOMAXPROCS(g.low)
			}
			g.mu.Unlock()
		})
	}
}
