//go:build race

package main

// raceEnabled: the test binary has the race detector, which makes 1000
// simulated nodes' crypto too slow for the suite.
const raceEnabled = true
