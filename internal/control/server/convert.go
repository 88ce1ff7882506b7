package server

import (
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/store"
)

// The store keeps its own plain types so it imports no protocol package;
// these turn them into the control protocol's.

// dnsConfigFromStore converts the store's custom DNS data to the network
// map's (nameservers and search domains are the server's to fill in).
func dnsConfigFromStore(c store.DNSConfig) netmap.DNSConfig {
	var out netmap.DNSConfig
	for _, r := range c.Records {
		out.Records = append(out.Records, netmap.DNSRecord(r))
	}
	out.Zones = c.Zones
	for _, rt := range c.Routes {
		out.Routes = append(out.Routes, netmap.DNSRoute(rt))
	}
	return out
}
