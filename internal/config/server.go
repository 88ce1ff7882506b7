package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

// Server is the schema of `warren server`.
var Server = newSchema("server")

// The keys of `warren server`, in the order --help and the example file
// show them.
var (
	ServerListen = Server.checked("listen", ":8080",
		"address to serve HTTP(S) on", checkListen(false))
	ServerPublicURL = Server.url("public_url",
		"the URL nodes reach this server at, for the relay map (default: http(s)://LISTEN when it names a host)")
	ServerAllowedHosts = Server.hosts("allowed_hosts",
		"further host names clients reach this server by (besides IP addresses, localhost, the public URL's host and the TLS certificate's names); requests for other names are refused (DNS rebinding protection)")
	ServerDataDir = Server.str("data_dir", "/var/lib/warren-server",
		"directory for the server key, the SQLite database and the ACME certificate cache (created 0700)")
	ServerDB = Server.checked("db", "",
		`database: "sqlite:PATH" or "postgres://..." (default "sqlite:DATA_DIR/warren.db")`, checkDSN, Secret)
	ServerIPv4Prefix = declare[netipPrefix](Server, "ipv4_prefix", prefixKind{}, "",
		"IPv4 prefix node addresses come from, fixed at first start (default 100.64.0.0/10)", nil)
	ServerIPv6Prefix = declare[netipPrefix](Server, "ipv6_prefix", prefixKind{v6: true}, "",
		"IPv6 prefix node addresses come from, fixed at first start (default a random ULA /48)", nil)
	ServerDomain = Server.checked("domain", "",
		"the deployment's DNS domain (default warren.internal)", checkDomain)
	ServerEphemeralGrace = declare[time.Duration](Server, "ephemeral_grace", durationKind{min: time.Second}, "2m",
		"how long an ephemeral node may stay offline before it is deleted", nil)
	ServerAuditKeep = declare[time.Duration](Server, "audit_keep", durationKind{}, "365d",
		"how long the audit log keeps an entry; older ones are deleted once an hour (0: keep every entry)", nil)
	ServerWireGuardTrafficInterval = declare[time.Duration](Server, "wg_traffic_interval", durationKind{min: time.Second}, "1m",
		"how often at most a WireGuard-only member's traffic, as its gateway reports it, changes in the other nodes' maps (each change is a message to every node)", nil)
	ServerRelay = Server.boolean("relay",
		"also serve a packet relay (at /warren/v1/relay, with the server key) for the nodes in the store")
	ServerRelayRate = declare[int64](Server, "relay_rate", byteSizeKind{}, "0",
		"with relay: limit each node to this many bytes per second sent through the relay, e.g. 50M (K, M, G: KiB, MiB, GiB; 0: no limit)", nil)
	ServerRelayBurst = declare[int64](Server, "relay_burst", byteSizeKind{}, "0",
		fmt.Sprintf("with relay_rate: bytes a node may send at once above its rate (0: %dM)", relayserver.DefaultBurst>>20), nil)
	ServerRelayQueue = Server.integer("relay_queue", itoa(relayserver.DefaultQueuePackets),
		"with relay: packets queued towards one node before new ones are dropped")
	ServerSTUNListen = Server.checked("stun_listen", "",
		`UDP address to answer STUN on, e.g. ":3478" (default off)`, checkListen(false))
	ServerRelayMap = Server.str("relay_map", "",
		`JSON file of further relays offered to nodes ({"regions":[{id,code,url,public_key,stun}]})`)
	ServerMetricsListen = Server.checked("metrics_listen", "",
		"serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)", checkListen(true))
	ServerMaxConnsPerIP = Server.integer("max_conns_per_ip", itoa(httpguard.DefaultPerSource),
		"concurrent connections accepted from one source address (0: no cap)")
	ServerOIDCIssuer = Server.url("oidc_issuer",
		"sign people in with this OpenID Connect provider (its issuer URL; docs/OIDC.md); needs public_url, oidc_client_id, oidc_client_secret_file and an allow list")
	ServerOIDCClientID = Server.str("oidc_client_id", "",
		"the client ID registered at the OIDC provider")
	ServerOIDCClientSecretFile = Server.str("oidc_client_secret_file", "",
		"file holding the OIDC client secret (one line; not readable by group or others)")
	ServerOIDCScopes = Server.words("oidc_scopes", "openid,email,profile",
		"scopes asked of the OIDC provider")
	ServerOIDCAllowedDomains = Server.words("oidc_allowed_domains", "",
		"people whose verified email is in one of these domains may sign in")
	ServerOIDCAllowedUsers = Server.words("oidc_allowed_users", "",
		"people with one of these verified emails may sign in")
	ServerOIDCAllowedGroups = Server.words("oidc_allowed_groups", "",
		"members of one of these groups (oidc_groups_claim) may sign in")
	ServerOIDCGroupsClaim = Server.str("oidc_groups_claim", "groups",
		"the ID token claim that lists a person's groups")
	ServerOIDCAllowUnverifiedEmail = Server.boolean("oidc_allow_unverified_email",
		"count the email of an ID token that has no email_verified claim (some providers never send it)")
	ServerOIDCAdminUsers = Server.words("oidc_admin_users", "",
		"people with one of these verified emails are admins of the web console")
	ServerOIDCAdminGroups = Server.words("oidc_admin_groups", "",
		"members of one of these groups are admins of the web console")
	ServerOIDCCreateUsers = declare[bool](Server, "oidc_create_users", boolKind{}, "true",
		"create a user on a person's first sign-in (false: an admin creates the user, named by the email, first)", nil)
	ServerOIDCSessionTTL = declare[time.Duration](Server, "oidc_session_ttl", durationKind{min: time.Minute}, "12h",
		"how long a browser session lasts after signing in", nil)
	ServerNodeKeyExpiry = declare[time.Duration](Server, "node_key_expiry", durationKind{}, "180d",
		"nodes joined by signing in (warren up without an auth key) must sign in again after this (0: never)", nil)
	ServerNodeApproval = Server.boolean("node_approval",
		"nodes joined by signing in wait until an admin approves them (warren admin nodes approve NODE)")
	ServerTLS = tlsKeys(Server)
	ServerLog = logKeys(Server)
)

func init() {
	Server.validate = func(c *Config) error {
		if Get(c, ServerDataDir) == "" {
			return errors.New("config: data_dir is empty")
		}
		if err := checkRelayLimits(c, ServerRelayRate, ServerRelayBurst, ServerRelayQueue); err != nil {
			return err
		}
		if err := checkOIDC(c); err != nil {
			return err
		}
		return checkTLS(c, ServerTLS)
	}
}

// checkOIDC: sign-in needs the client, a public URL to come back to, and
// someone allowed to sign in.
func checkOIDC(c *Config) error {
	if Get(c, ServerOIDCIssuer) == "" {
		return nil
	}
	switch {
	case Get(c, ServerPublicURL) == "":
		return errors.New("config: oidc_issuer needs public_url (the provider sends people back to PUBLIC_URL/oidc/callback)")
	case Get(c, ServerOIDCClientID) == "":
		return errors.New("config: oidc_issuer needs oidc_client_id")
	case Get(c, ServerOIDCClientSecretFile) == "":
		return errors.New("config: oidc_issuer needs oidc_client_secret_file")
	case len(Get(c, ServerOIDCAllowedDomains))+len(Get(c, ServerOIDCAllowedUsers))+len(Get(c, ServerOIDCAllowedGroups)) == 0:
		return errors.New("config: oidc_issuer needs oidc_allowed_domains, oidc_allowed_users or oidc_allowed_groups (nobody could sign in)")
	}
	return nil
}

func checkDSN(s string) error {
	for _, p := range []string{"sqlite:", "postgres://", "postgresql://"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return nil
		}
	}
	if s != "" && !strings.Contains(s, "://") {
		return nil // a bare PATH is SQLite, as --db always took it
	}
	return errors.New(`want "sqlite:PATH" or "postgres://..."`)
}

func checkDomain(s string) error {
	if _, err := (hostsKind{}).parse(s); err != nil || strings.ContainsAny(s, ", :") {
		return errors.New(strings.TrimSpace(s) + " is not a DNS domain")
	}
	return nil
}
