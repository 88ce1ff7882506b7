package daemon

import (
	"maps"
	"slices"
)

// healthSet is the node's current problems, as status lists them: one
// message per condition, each set where its cause is found and cleared
// where that cause is checked again, so one part of the daemon never
// hides or clears another's problem. Under d.mu.
type healthSet map[healthKey]string

// healthKey names one condition.
type healthKey string

// The conditions.
const (
	healthControl   healthKey = "control"    // the server refused the node or its disco key; the client did not start
	healthLogout    healthKey = "logout"     // logged out locally, the server not told
	healthPeers     healthKey = "peers"      // the engine refused the peers
	healthInterface healthKey = "interface"  // addresses and routes on the tunnel interface
	healthRoutes    healthKey = "routes"     // table 52 and its rules
	healthForward   healthKey = "forwarding" // forwarding and NAT for peers
	healthExit      healthKey = "exit-node"  // the exit node preference cannot be met
	healthFilter    healthKey = "filter"     // the packet filter from the server
	healthDNS       healthKey = "dns"        // the MagicDNS configuration
	healthDNSListen healthKey = "dns-listen" // MagicDNS cannot listen
	healthHostDNS   healthKey = "host-dns"   // the host resolver (--accept-dns)
)

// mapConditions are the conditions about applying a map: they go when
// the map does (down, logout, the server refusing the node).
var mapConditions = []healthKey{healthPeers, healthInterface, healthRoutes, healthForward, healthExit,
	healthFilter, healthDNS, healthDNSListen, healthHostDNS}

// set records msg for k; "" clears it.
func (h *healthSet) set(k healthKey, msg string) {
	if msg == "" {
		delete(*h, k)
		return
	}
	if *h == nil {
		*h = healthSet{}
	}
	(*h)[k] = msg
}

// list is the messages, sorted.
func (h healthSet) list() []string {
	if len(h) == 0 {
		return nil
	}
	out := slices.Collect(maps.Values(h))
	slices.Sort(out)
	return out
}
