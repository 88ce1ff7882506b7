package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/store"
)

func init() {
	register(command{"server", "server [FLAGS]       run the coordination server (see 'warren server --help')", runServer})
}

// serverConfig is what `warren server` runs with: flags, or the same
// settings as snake_case keys of a JSON --config file (flags win).
type serverConfig struct {
	Listen         string `json:"listen"`
	DataDir        string `json:"data_dir"`
	DB             string `json:"db"`
	IPv4Prefix     string `json:"ipv4_prefix"`
	IPv6Prefix     string `json:"ipv6_prefix"`
	Domain         string `json:"domain"`
	EphemeralGrace string `json:"ephemeral_grace"`
	TLSCert        string `json:"tls_cert"`
	TLSKey         string `json:"tls_key"`
	STUNListen     string `json:"stun_listen"`
	PublicURL      string `json:"public_url"`
	RelayMap       string `json:"relay_map"`
	MetricsListen  string `json:"metrics_listen"`
	AllowedHosts   string `json:"allowed_hosts"`
	MaxConnsPerIP  string `json:"max_conns_per_ip"`
	// RelayRate, RelayBurst and RelayQueue are the embedded relay's
	// per-node limits (relayLimits): no rate limit unless set.
	RelayRate  string `json:"relay_rate"`
	RelayBurst string `json:"relay_burst"`
	RelayQueue string `json:"relay_queue"`
	// Relay is "true" in the config file (a JSON boolean), --relay on the
	// command line.
	Relay bool `json:"relay"`
}

const (
	defaultListen  = ":8080"
	defaultDataDir = "/var/lib/warren-server"
	serverKeyFile  = "server.key"
)

// serverFlags binds the flags shared by `warren server` and its
// subcommands; all=false binds only those locating the data (config,
// data dir, database, prefixes).
type serverFlags struct {
	fs     *flag.FlagSet
	config string
	c      serverConfig
}

func newServerFlags(name string, stderr io.Writer, all bool) *serverFlags {
	sf := &serverFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := sf.fs
	fs.SetOutput(stderr)
	fs.StringVar(&sf.config, "config", "", "JSON config file with the same settings as snake_case keys (flags override it)")
	fs.StringVar(&sf.c.DataDir, "data-dir", defaultDataDir, "directory for the server key and the SQLite database (created 0700)")
	fs.StringVar(&sf.c.DB, "db", "", `database: "sqlite:PATH" or "postgres://..." (default "sqlite:DATA-DIR/warren.db")`)
	fs.StringVar(&sf.c.IPv4Prefix, "ipv4-prefix", "", "IPv4 prefix node addresses come from, fixed at first start (default 100.64.0.0/10)")
	fs.StringVar(&sf.c.IPv6Prefix, "ipv6-prefix", "", "IPv6 prefix node addresses come from, fixed at first start (default a random ULA /48)")
	if all {
		fs.StringVar(&sf.c.Listen, "listen", defaultListen, "address to serve HTTP(S) on")
		fs.StringVar(&sf.c.Domain, "domain", "", "the deployment's DNS domain (default "+server.DefaultDomain+")")
		fs.StringVar(&sf.c.EphemeralGrace, "ephemeral-grace", "", "how long an ephemeral node may stay offline before it is deleted (default 2m)")
		fs.StringVar(&sf.c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; needs --tls-key)")
		fs.StringVar(&sf.c.TLSKey, "tls-key", "", "private key for --tls-cert (PEM)")
		fs.BoolVar(&sf.c.Relay, "relay", false, "also serve a packet relay (at "+relay.Path+", with the server key) for the nodes in the store")
		fs.StringVar(&sf.c.STUNListen, "stun-listen", "", `UDP address to answer STUN on, e.g. ":3478" (default off)`)
		fs.StringVar(&sf.c.PublicURL, "public-url", "", "the URL nodes reach this server at, for the relay map (default: http(s)://LISTEN when it names a host)")
		fs.StringVar(&sf.c.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)")
		fs.StringVar(&sf.c.AllowedHosts, "allowed-hosts", "", "comma-separated further host names clients reach this server by (besides IP addresses, localhost, the --public-url host and the TLS certificate's names); requests for other names are refused (DNS rebinding protection)")
		fs.StringVar(&sf.c.MaxConnsPerIP, "max-conns-per-ip", "", fmt.Sprintf("concurrent connections accepted from one source address (default %d; 0: no cap)", httpguard.DefaultPerSource))
		fs.StringVar(&sf.c.RelayRate, "relay-rate", "", "with --relay: limit each node to this many bytes per second sent through the relay, e.g. 50M (K, M, G: KiB, MiB, GiB); default no limit")
		fs.StringVar(&sf.c.RelayBurst, "relay-burst", "", fmt.Sprintf("with --relay-rate: bytes a node may send at once above its rate (default %dM)", relayserver.DefaultBurst>>20))
		fs.StringVar(&sf.c.RelayQueue, "relay-queue", "", fmt.Sprintf("with --relay: packets queued towards one node before new ones are dropped (default %d)", relayserver.DefaultQueuePackets))
		fs.StringVar(&sf.c.RelayMap, "relay-map", "", "JSON file of further relays offered to nodes ({\"regions\":[{id,code,url,public_key,stun}]})")
	}
	return sf
}

// resolve merges defaults, the config file and the flags given on the
// command line, and checks the result.
func (sf *serverFlags) resolve() (serverConfig, error) {
	c := serverConfig{Listen: defaultListen, DataDir: defaultDataDir}
	if sf.config != "" {
		fc, err := loadServerConfig(sf.config)
		if err != nil {
			return c, err
		}
		mergeConfig(&c, fc)
	}
	sf.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			c.Listen = sf.c.Listen
		case "data-dir":
			c.DataDir = sf.c.DataDir
		case "db":
			c.DB = sf.c.DB
		case "ipv4-prefix":
			c.IPv4Prefix = sf.c.IPv4Prefix
		case "ipv6-prefix":
			c.IPv6Prefix = sf.c.IPv6Prefix
		case "domain":
			c.Domain = sf.c.Domain
		case "ephemeral-grace":
			c.EphemeralGrace = sf.c.EphemeralGrace
		case "tls-cert":
			c.TLSCert = sf.c.TLSCert
		case "tls-key":
			c.TLSKey = sf.c.TLSKey
		case "relay":
			c.Relay = sf.c.Relay
		case "stun-listen":
			c.STUNListen = sf.c.STUNListen
		case "public-url":
			c.PublicURL = sf.c.PublicURL
		case "relay-map":
			c.RelayMap = sf.c.RelayMap
		case "metrics-listen":
			c.MetricsListen = sf.c.MetricsListen
		case "allowed-hosts":
			c.AllowedHosts = sf.c.AllowedHosts
		case "max-conns-per-ip":
			c.MaxConnsPerIP = sf.c.MaxConnsPerIP
		case "relay-rate":
			c.RelayRate = sf.c.RelayRate
		case "relay-burst":
			c.RelayBurst = sf.c.RelayBurst
		case "relay-queue":
			c.RelayQueue = sf.c.RelayQueue
		}
	})
	if c.DataDir == "" {
		return c, errors.New("--data-dir is empty")
	}
	if c.DB == "" {
		c.DB = "sqlite:" + filepath.Join(c.DataDir, "warren.db")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, errors.New("--tls-cert and --tls-key go together")
	}
	if _, err := c.perSourceCap(); err != nil {
		return c, err
	}
	if _, err := c.relayOptions(); err != nil {
		return c, err
	}
	return c, nil
}

// relayLimits are the embedded relay's per-node limits.
func (c serverConfig) relayLimits() relayLimits {
	return relayLimits{rate: c.RelayRate, burst: c.RelayBurst, queue: c.RelayQueue}
}

// relayOptions are the embedded relay's options but for its key, vouching
// and logger.
func (c serverConfig) relayOptions() (relayserver.Options, error) {
	var o relayserver.Options
	err := c.relayLimits().options(&o, "relay-")
	return o, err
}

func mergeConfig(c *serverConfig, fc serverConfig) {
	for _, p := range []struct {
		dst *string
		src string
	}{
		{&c.Listen, fc.Listen}, {&c.DataDir, fc.DataDir}, {&c.DB, fc.DB}, {&c.IPv4Prefix, fc.IPv4Prefix},
		{&c.IPv6Prefix, fc.IPv6Prefix}, {&c.Domain, fc.Domain}, {&c.EphemeralGrace, fc.EphemeralGrace},
		{&c.TLSCert, fc.TLSCert}, {&c.TLSKey, fc.TLSKey}, {&c.STUNListen, fc.STUNListen},
		{&c.PublicURL, fc.PublicURL}, {&c.RelayMap, fc.RelayMap}, {&c.MetricsListen, fc.MetricsListen},
		{&c.AllowedHosts, fc.AllowedHosts}, {&c.MaxConnsPerIP, fc.MaxConnsPerIP},
		{&c.RelayRate, fc.RelayRate}, {&c.RelayBurst, fc.RelayBurst}, {&c.RelayQueue, fc.RelayQueue},
	} {
		if p.src != "" {
			*p.dst = p.src
		}
	}
	c.Relay = c.Relay || fc.Relay
}

// loadServerConfig reads a JSON config file; unknown keys and values that
// are not strings are errors naming the key.
func loadServerConfig(path string) (serverConfig, error) {
	var c serverConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return c, fmt.Errorf("config %s: not a JSON object: %v", path, err)
	}
	fields := map[string]*string{
		"listen": &c.Listen, "data_dir": &c.DataDir, "db": &c.DB, "ipv4_prefix": &c.IPv4Prefix,
		"ipv6_prefix": &c.IPv6Prefix, "domain": &c.Domain, "ephemeral_grace": &c.EphemeralGrace,
		"tls_cert": &c.TLSCert, "tls_key": &c.TLSKey, "stun_listen": &c.STUNListen,
		"public_url": &c.PublicURL, "relay_map": &c.RelayMap, "metrics_listen": &c.MetricsListen,
		"allowed_hosts": &c.AllowedHosts, "max_conns_per_ip": &c.MaxConnsPerIP,
		"relay_rate": &c.RelayRate, "relay_burst": &c.RelayBurst, "relay_queue": &c.RelayQueue,
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "relay" {
			if err := json.Unmarshal(raw[k], &c.Relay); err != nil {
				return c, fmt.Errorf("config %s: key %q: want true or false", path, k)
			}
			continue
		}
		dst, ok := fields[k]
		if !ok {
			return c, fmt.Errorf("config %s: unknown key %q", path, k)
		}
		if v, ok := listenerSetting(k, raw[k]); ok { // listen.go
			*dst = v
			continue
		}
		if err := json.Unmarshal(raw[k], dst); err != nil {
			return c, fmt.Errorf("config %s: key %q: want a string", path, k)
		}
	}
	return c, nil
}

// storeOptions parses the address prefixes.
func (c serverConfig) storeOptions() (store.Options, error) {
	var o store.Options
	var err error
	if c.IPv4Prefix != "" {
		if o.IPv4Prefix, err = netip.ParsePrefix(c.IPv4Prefix); err != nil || !o.IPv4Prefix.Addr().Is4() {
			return o, fmt.Errorf("--ipv4-prefix %q is not an IPv4 prefix", c.IPv4Prefix)
		}
	}
	if c.IPv6Prefix != "" {
		if o.IPv6Prefix, err = netip.ParsePrefix(c.IPv6Prefix); err != nil || !o.IPv6Prefix.Addr().Is6() {
			return o, fmt.Errorf("--ipv6-prefix %q is not an IPv6 prefix", c.IPv6Prefix)
		}
	}
	return o, nil
}

func (c serverConfig) openStore(ctx context.Context) (*store.Store, error) {
	o, err := c.storeOptions()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return store.Open(ctx, c.DB, o)
}

// storeExists checks, for the subcommands that use an existing store,
// that its SQLite database (and data dir) exists, so that a mistyped
// --data-dir or --db fails instead of creating an empty store; only
// `warren server` creates them. A PostgreSQL database that does not exist
// fails when opened.
func (c serverConfig) storeExists() error {
	if strings.HasPrefix(c.DB, "postgres://") || strings.HasPrefix(c.DB, "postgresql://") {
		return nil
	}
	path := strings.TrimPrefix(c.DB, "sqlite:")
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	hint := "check --data-dir, --db or the config; `warren server` creates it on its first start"
	if dir := filepath.Dir(path); dir == c.DataDir {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data dir %s does not exist (%s)", dir, hint)
		}
	}
	return fmt.Errorf("database %s does not exist (%s)", path, hint)
}

func (c serverConfig) keyPath() string { return filepath.Join(c.DataDir, serverKeyFile) }

// loadServerKey reads the server's static private key, refusing a file
// that group or others may read. With create, a missing key is generated
// and written atomically with mode 0600.
func loadServerKey(path string, create bool) (noise.PrivateKey, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && create {
		return createServerKey(path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return noise.PrivateKey{}, fmt.Errorf("no server key at %s (start `warren server` once to create it)", path)
	}
	if err != nil {
		return noise.PrivateKey{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return noise.PrivateKey{}, err
	}
	if !fi.Mode().IsRegular() {
		return noise.PrivateKey{}, fmt.Errorf("server key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return noise.PrivateKey{}, fmt.Errorf("server key %s is readable by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return noise.PrivateKey{}, err
	}
	k, err := noise.ParsePrivateKey(strings.TrimSpace(string(b)))
	noise.Zero(b)
	if err != nil {
		return noise.PrivateKey{}, fmt.Errorf("server key %s: %v", path, err)
	}
	return k, nil
}

func createServerKey(path string) (noise.PrivateKey, error) {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		return k, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".server.key-*")
	if err != nil {
		return k, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return k, err
	}
	if _, err := tmp.WriteString(k.Base64() + "\n"); err != nil {
		tmp.Close()
		return k, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return k, err
	}
	if err := tmp.Close(); err != nil {
		return k, err
	}
	// Link, not rename: never replace a key another process just created.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadServerKey(path, false)
		}
		return k, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return k, nil
}

func serverUsage(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fmt.Fprintln(w, `usage: warren server [FLAGS]                  run the coordination server in the foreground
       warren server apikey create [--scope admin|relay] [--expiration D] [--config F] [--data-dir D] [--db DSN]
                                                print a new admin API key (--scope relay: a
                                                read-only relay key for 'warren relay --relay-key')
       warren server apikey list [--json] [--config F] [--data-dir D] [--db DSN]
       warren server key [--config F] [--data-dir D] print the server's public key
One HTTP server serves the control protocol (/warren/v1/) and the admin API
(/api/v1/, see 'warren admin --help'). The subcommands use the store directly,
on the server host, and only an existing one (start the server once first).
Flags:`)
	fs.PrintDefaults()
}

func runServer(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "apikey", "apikeys":
			return runServerAPIKey(args[1:], stdout, stderr)
		case "key":
			return runServerKey(args[1:], stdout, stderr)
		}
	}
	sf := newServerFlags("server", stderr, true)
	if code, done := quietParse(sf.fs, func() error { return sf.fs.Parse(args) }, "warren server", stdout, stderr, func(w io.Writer) { serverUsage(w, sf.fs) }); done {
		return code
	}
	if sf.fs.NArg() != 0 {
		fmt.Fprintf(stderr, "warren server: unexpected argument %q (subcommands: apikey, key)\n", sf.fs.Arg(0))
		return 2
	}
	c, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "warren server: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer profileFromEnv(stderr)()
	return serve(ctx, c, stderr)
}

// serve runs the server until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, c serverConfig, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "warren server: "+format+"\n", args...)
		return 1
	}
	var grace time.Duration
	if c.EphemeralGrace != "" {
		var err error
		if grace, err = admin.ParseDuration(c.EphemeralGrace); err != nil {
			fmt.Fprintf(stderr, "warren server: --ephemeral-grace: %v\n", err)
			return 2
		}
	}
	if _, err := c.storeOptions(); err != nil {
		fmt.Fprintf(stderr, "warren server: %v\n", err)
		return 2
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fail("data dir: %v", err)
	}
	key, err := loadServerKey(c.keyPath(), true)
	if err != nil {
		return fail("%v", err)
	}
	st, err := c.openStore(ctx)
	if err != nil {
		return fail("%v", err)
	}
	defer st.Close()
	logger := newServiceLog(stderr, "server", false)
	mux := http.NewServeMux()
	ropts, err := c.relayOptions()
	if err != nil {
		fmt.Fprintf(stderr, "warren server: %v\n", err)
		return 2
	}
	ropts.Key, ropts.Logger = key, logger
	if c.Relay {
		ropts.Allowed = relayserver.StoreAllowed(st, 5*time.Second)
	}
	closeRelay, stunAddr, rs, err := embeddedRelay(ctx, mux, ropts, c.STUNListen)
	if err != nil {
		return fail("%v", err)
	}
	defer closeRelay()
	regions, err := c.relayRegions(key.PublicKey(), stunAddr)
	if err != nil {
		return fail("%v", err)
	}
	srv := server.New(st, key, server.Options{Domain: c.Domain, EphemeralGrace: grace, Relays: regions, Logger: logger})
	defer srv.Close()
	mux.Handle("/", srv.Handler())
	mux.Handle(admin.Prefix, admin.New(st, srv.Notify, admin.WithDomain(srv.Domain()), admin.WithLogger(logger)))
	mountHealth(mux, func(ctx context.Context) error { return storeReady(ctx, st) }, logger) // health.go
	hosts := listenerHosts(c.Listen, c.PublicURL, c.TLSCert, c.AllowedHosts)
	if c.MetricsListen != "" {
		if _, err := metrics.Serve(ctx, c.MetricsListen, serverCollectors(srv, rs), logger, hosts...); err != nil {
			return fail("--metrics-listen: %v", err)
		}
	}
	perSource, err := c.perSourceCap()
	if err != nil {
		fmt.Fprintf(stderr, "warren server: %v\n", err)
		return 2
	}
	hs := &http.Server{Handler: mux, ErrorLog: httpErrorLog(logger)}
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fail("%v", err)
	}
	l = guardPublic(hs, l, hosts, perSource, "; add the name with --public-url or --allowed-hosts", logger)
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stderr, "warren server: listening on %s://%s, public key %s\n", scheme, l.Addr(), srv.PublicKey())
	if c.Relay {
		fmt.Fprintf(stderr, "warren server: relay on %s://%s%s\n", scheme, l.Addr(), relay.Path)
	}
	if stunAddr != nil {
		fmt.Fprintf(stderr, "warren server: STUN on udp %s\n", stunAddr)
	}
	defer notifyServing(ctx, logger, selfProbe(l.Addr(), c.TLSCert != ""))() // READY=1 now, STOPPING=1 when ctx ends
	if err := serveUntil(ctx, hs, l, c.TLSCert, c.TLSKey, 10*time.Second); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(stderr, "warren server: shutting down")
	srv.Close() // control streams are hijacked: Shutdown does not see them
	closeRelay()
	return 0
}

// runServerAPIKey: `warren server apikey create|list`.
func runServerAPIKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(stdout, "usage: warren server apikey create [--scope admin|relay] [--expiration D] [--config F] [--data-dir D] [--db DSN]\n       warren server apikey list [--json] [--config F] [--data-dir D] [--db DSN]")
			return 0
		}
		fmt.Fprintln(stderr, "warren server apikey: want 'create' or 'list'")
		return 2
	}
	verb := args[0]
	sf := newServerFlags("server apikey "+verb, stderr, false)
	var expiration, scope string
	var asJSON bool
	if verb == "create" {
		sf.fs.StringVar(&expiration, "expiration", "", "the key stops working after this long (e.g. 90d, 12h; default never)")
		sf.fs.StringVar(&scope, "scope", "admin", "admin (everything) or relay (read-only: lists node keys for 'warren relay --relay-key')")
	} else {
		sf.fs.BoolVar(&asJSON, "json", false, "print JSON")
	}
	if code, done := quietParse(sf.fs, func() error { return sf.fs.Parse(args[1:]) }, "warren server apikey "+verb, stdout, stderr, func(w io.Writer) { serverUsage(w, sf.fs) }); done {
		return code
	}
	if sf.fs.NArg() != 0 {
		fmt.Fprintf(stderr, "warren server apikey %s: unexpected argument %q\n", verb, sf.fs.Arg(0))
		return 2
	}
	c, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 2
	}
	if verb == "create" && scope != "admin" && scope != store.ScopeRelay {
		fmt.Fprintf(stderr, "warren server apikey create: --scope %q: want admin or relay\n", scope)
		return 2
	}
	if scope == "admin" {
		scope = store.ScopeAdmin
	}
	var exp time.Time
	if expiration != "" {
		d, err := admin.ParseDuration(expiration)
		if err != nil {
			fmt.Fprintf(stderr, "warren server apikey create: --expiration: %v\n", err)
			return 2
		}
		exp = time.Now().Add(d)
	}
	if err := c.storeExists(); err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 1
	}
	st, err := c.openStore(context.Background())
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 1
	}
	defer st.Close()
	ctx := context.Background()
	if verb == "create" {
		secret, _, err := st.CreateScopedAPIKey(ctx, scope, exp)
		if err != nil {
			fmt.Fprintf(stderr, "warren server apikey create: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, secret)
		return 0
	}
	ks, err := st.ListAPIKeys(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey list: %v\n", err)
		return 1
	}
	now := time.Now()
	out := make([]admin.APIKey, 0, len(ks))
	for _, k := range ks {
		a := admin.APIKey{ID: k.ID, Prefix: k.Prefix, Expired: !k.Expiry.IsZero() && !now.Before(k.Expiry), Created: k.Created.UTC(), Scope: admin.ScopeName(k.Scope)}
		a.Expiration, a.LastUsed = optTime(k.Expiry), optTime(k.LastUsed)
		out = append(out, a)
	}
	if asJSON {
		return printJSON(stdout, stderr, "warren server apikey list", out)
	}
	printAPIKeys(stdout, out)
	return 0
}

// runServerKey: `warren server key` prints the public key of an existing
// server key.
func runServerKey(args []string, stdout, stderr io.Writer) int {
	sf := newServerFlags("server key", stderr, false)
	if code, done := quietParse(sf.fs, func() error { return sf.fs.Parse(args) }, "warren server key", stdout, stderr, func(w io.Writer) { serverUsage(w, sf.fs) }); done {
		return code
	}
	if sf.fs.NArg() != 0 {
		fmt.Fprintf(stderr, "warren server key: unexpected argument %q\n", sf.fs.Arg(0))
		return 2
	}
	c, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "warren server key: %v\n", err)
		return 2
	}
	k, err := loadServerKey(c.keyPath(), false)
	if err != nil {
		fmt.Fprintf(stderr, "warren server key: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.PublicKey().String())
	noise.Zero(k[:])
	return 0
}
