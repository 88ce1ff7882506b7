package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

// Relay is the schema of `warren relay`.
var Relay = newSchema("relay")

// The keys of `warren relay`. server, relay_key and api_key keep the
// environment variables they had before the config file (WARREN_SERVER,
// WARREN_RELAY_KEY, WARREN_API_KEY).
var (
	RelayServer = Relay.url("server",
		"coordination server URL; nodes it knows may use the relay")
	RelayRelayKey = Relay.checked("relay_key", "",
		"relay key wrly_... to list nodes with, read-only (create it with 'warren server apikey create --scope relay')",
		checkPrefix("a relay key (wrly_...)", "wrly_"), Secret)
	RelayAPIKey = Relay.checked("api_key", "",
		"an admin API key wapi_... instead of relay_key: works, but over-privileged",
		checkPrefix("an API key (wapi_... or wrly_...)", "wapi_", "wrly_"), Secret)
	RelayInsecure = Relay.boolean("insecure",
		"send the key over plain http to a remote (not loopback) server")
	RelayListen = Relay.checked("listen", ":8443",
		"address to serve the relay on (HTTP, or HTTPS with tls_cert or tls_acme)", checkListen(false))
	RelaySTUNListen = Relay.checked("stun_listen", ":3478",
		`UDP address to answer STUN on ("" disables)`, checkListen(false))
	RelayDataDir = Relay.str("data_dir", "/var/lib/warren-relay",
		"directory for the relay key and the ACME certificate cache (created 0700)")
	RelayPoll = declare[time.Duration](Relay, "poll", durationKind{min: 100 * time.Millisecond}, "5s",
		"how often to fetch the node list", nil)
	RelayRate = declare[int64](Relay, "rate", byteSizeKind{}, "0",
		"limit each node to this many bytes per second sent through the relay, e.g. 50M (K, M, G: KiB, MiB, GiB; 0: no limit)", nil)
	RelayBurst = declare[int64](Relay, "burst", byteSizeKind{}, "0",
		fmt.Sprintf("with rate: bytes a node may send at once above its rate (0: %dM)", relayserver.DefaultBurst>>20), nil)
	RelayQueue = Relay.integer("queue", itoa(relayserver.DefaultQueuePackets),
		"packets queued towards one node before new ones are dropped")
	RelayAllowedHosts = Relay.hosts("allowed_hosts",
		"host names nodes reach this relay by (its name in the relay map; IP addresses, localhost, the TLS certificate's names and the machine's host name are always served); requests for other names are refused (DNS rebinding protection)")
	RelayMaxConnsPerIP = Relay.integer("max_conns_per_ip", itoa(httpguard.DefaultPerSource),
		"concurrent connections accepted from one source address (0: no cap)")
	RelayMetricsListen = Relay.checked("metrics_listen", "",
		"serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)", checkListen(true))
	RelayTLS = tlsKeys(Relay)
	RelayLog = logKeys(Relay)
)

func init() {
	Relay.validate = func(c *Config) error {
		if Get(c, RelayDataDir) == "" {
			return errors.New("config: data_dir is empty")
		}
		if Get(c, RelayRelayKey) != "" && Get(c, RelayAPIKey) != "" {
			if strings.HasPrefix(c.From(RelayAPIKey.Name()), "$") {
				// WARREN_API_KEY is also the admin commands' key: with a
				// relay key set it was always ignored, and still is.
				c.vals[RelayAPIKey.Name()], c.from[RelayAPIKey.Name()] = "", "default"
			} else {
				return errors.New("config: relay_key and api_key: give one (a relay key is enough)")
			}
		}
		if err := checkRelayLimits(c, RelayRate, RelayBurst, RelayQueue); err != nil {
			return err
		}
		return checkTLS(c, RelayTLS)
	}
}

// checkRelayLimits: a burst needs a rate (without one nothing is limited)
// and the queue holds at least one packet.
func checkRelayLimits(c *Config, rate, burst, queue Key[int64]) error {
	if Get(c, burst) > 0 && Get(c, rate) == 0 {
		return fmt.Errorf("config: %s needs %s (without a rate nothing is limited)", burst.Name(), rate.Name())
	}
	if Get(c, queue) == 0 {
		return fmt.Errorf("config: %s must be at least 1 packet", queue.Name())
	}
	return nil
}
