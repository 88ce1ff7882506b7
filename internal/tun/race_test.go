//go:build race

package tun

// raceEnabled: the race detector makes sync.Pool drop items, so allocation
// counts do not hold.
const raceEnabled = true
