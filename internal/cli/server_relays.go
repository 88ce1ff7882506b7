package cli

import (
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/metrics/servermetrics"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/store"
)

// embeddedRegionID is the relay map ID of the relay `warren server --relay`
// serves itself; regions from --relay-map must use other IDs.
const embeddedRegionID = 1

// relayRegions builds the relay map nodes get: the embedded relay (with
// relay; at publicURL, or at listen's host when it names one, https with
// useTLS) first, then the regions of the relayMap file.
func relayRegions(withRelay bool, listen, publicURL, relayMap string, useTLS bool, serverKey noise.PublicKey, stunAddr net.Addr) ([]netmap.RelayRegion, error) {
	var out []netmap.RelayRegion
	if withRelay {
		pub := publicURL
		if pub == "" {
			host, port, err := net.SplitHostPort(listen)
			if err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
				return nil, fmt.Errorf("--relay needs --public-url when --listen %q names no host", listen)
			}
			scheme := "http"
			if useTLS {
				scheme = "https"
			}
			pub = scheme + "://" + net.JoinHostPort(host, port)
		}
		u, err := url.Parse(pub)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			return nil, fmt.Errorf("--public-url %q is not http(s)://HOST[:PORT]", pub)
		}
		r := netmap.RelayRegion{ID: embeddedRegionID, Code: "home", URL: pub, Key: pubkey.Relay{PublicKey: serverKey}}
		if ua, ok := stunAddr.(*net.UDPAddr); ok {
			r.STUN = net.JoinHostPort(u.Hostname(), strconv.Itoa(ua.Port))
		}
		out = append(out, r)
	}
	if relayMap != "" {
		m, err := relay.LoadMap(relayMap)
		if err != nil {
			return nil, fmt.Errorf("--relay-map: %w", err)
		}
		for _, reg := range m.Regions {
			if withRelay && reg.ID == embeddedRegionID {
				return nil, fmt.Errorf("--relay-map: region ID %d is the embedded relay's; use another", reg.ID)
			}
			k, _ := reg.Key() // validated by LoadMap
			out = append(out, netmap.RelayRegion{ID: reg.ID, Code: reg.Code, URL: reg.URL, Key: k, STUN: reg.STUN})
		}
	}
	return out, nil
}

// replicaRelays splits a replica's relay map (relayRegions) into its own
// embedded relay, which it registers for every replica's maps, and the
// regions of its relay map file; region IDs from
// store.ReplicaRelayRegionBase up are the replicas' relays. A server
// alone keeps the map as it is.
func replicaRelays(replica string, withRelay bool, regions []netmap.RelayRegion) ([]netmap.RelayRegion, *netmap.RelayRegion, error) {
	if replica == "" {
		return regions, nil, nil
	}
	var own *netmap.RelayRegion
	if withRelay {
		own, regions = &regions[0], regions[1:]
	}
	for _, r := range regions {
		if r.ID >= store.ReplicaRelayRegionBase {
			return nil, nil, fmt.Errorf("--relay-map: region ID %d: IDs from %d up are the replicas' embedded relays'; use a lower one", r.ID, store.ReplicaRelayRegionBase)
		}
	}
	return regions, own, nil
}

// serverCollectors is the server's metrics registry: the control server's,
// and the embedded relay's when there is one.
func serverCollectors(srv *server.Server, rs *relayserver.Server) *prometheus.Registry {
	cs := []prometheus.Collector{servermetrics.Server{S: srv}}
	if rs != nil {
		cs = append(cs, servermetrics.Relay{R: rs})
	}
	return metrics.Registry(cs...)
}
