package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/metrics/servermetrics"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/stun"
)

func init() {
	register(command{"relay", "relay [FLAGS]        run a packet relay and STUN responder (see 'warren relay --help')", runRelay})
}

const (
	defaultRelayListen  = ":8443"
	defaultRelayDataDir = "/var/lib/warren-relay"
	defaultSTUNListen   = ":3478"
	relayKeyFile        = "relay.key"
)

// relayConfig is what `warren relay` runs with.
type relayConfig struct {
	listen, stunListen, dataDir string
	tlsCert, tlsKey             string
	server, apiKey, relayKey    string
	insecure                    bool
	poll                        time.Duration
	limits                      relayLimits
	metricsListen               string
	allowedHosts, maxConns      string
}

func relayFlags(stderr io.Writer) (*flag.FlagSet, *relayConfig) {
	c := &relayConfig{}
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", defaultRelayListen, "address to serve the relay on (HTTP, or HTTPS with --tls-cert)")
	fs.StringVar(&c.stunListen, "stun-listen", defaultSTUNListen, `UDP address to answer STUN on ("" disables)`)
	fs.StringVar(&c.dataDir, "data-dir", defaultRelayDataDir, "directory for the relay key (created 0700)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; needs --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "private key for --tls-cert (PEM)")
	fs.StringVar(&c.server, "server", "", "coordination server URL; nodes it knows may use the relay (default $"+envServer+")")
	fs.StringVar(&c.relayKey, "relay-key", "", "relay key wrly_... to list nodes with, read-only (default $"+envRelayKey+"; create it with 'warren server apikey create --scope relay')")
	fs.StringVar(&c.apiKey, "api-key", "", "an admin API key wapi_... instead of --relay-key: works, but over-privileged (default $"+envAPIKey+")")
	fs.BoolVar(&c.insecure, "insecure", false, "send the key over plain http to a remote (not loopback) server")
	fs.DurationVar(&c.poll, "poll", 5*time.Second, "how often to fetch the node list")
	fs.StringVar(&c.limits.rate, "rate", "", "limit each node to this many bytes per second sent through the relay, e.g. 50M (K, M, G: KiB, MiB, GiB); default no limit")
	fs.StringVar(&c.limits.burst, "burst", "", fmt.Sprintf("with --rate: bytes a node may send at once above its rate (default %dM)", relayserver.DefaultBurst>>20))
	fs.StringVar(&c.limits.queue, "queue", strconv.Itoa(relayserver.DefaultQueuePackets), "packets queued towards one node before new ones are dropped")
	fs.StringVar(&c.allowedHosts, "allowed-hosts", "", "comma-separated host names nodes reach this relay by (its name in the relay map; IP addresses, localhost, the TLS certificate's names and the machine's host name are always served); requests for other names are refused (DNS rebinding protection)")
	fs.StringVar(&c.maxConns, "max-conns-per-ip", "", fmt.Sprintf("concurrent connections accepted from one source address (default %d; 0: no cap)", httpguard.DefaultPerSource))
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)")
	return fs, c
}

// envRelayKey is the environment default of `warren relay --relay-key`.
const envRelayKey = "WARREN_RELAY_KEY"

func relayUsage(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fmt.Fprintln(w, `usage: warren relay --server URL --relay-key KEY [FLAGS]   run a relay in the foreground
       warren relay key [--data-dir D]                       print the relay's public key
The relay forwards WireGuard packets between nodes over HTTP(S) (path
`+relay.Path+`) for nodes that cannot reach each other directly, and
answers STUN on UDP. Only nodes the coordination server lists (and has not
expired) may connect; it polls the server's node keys with a relay key
(read-only; 'warren server apikey create --scope relay' or 'warren admin
apikeys create --scope relay' makes one). Flags:`)
	fs.PrintDefaults()
}

func (c *relayConfig) check() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.dataDir == "" {
		return errors.New("--data-dir is empty")
	}
	if c.server == "" {
		c.server = strings.TrimSpace(os.Getenv(envServer))
	}
	if c.relayKey == "" && c.apiKey == "" {
		c.relayKey = strings.TrimSpace(os.Getenv(envRelayKey))
	}
	if c.relayKey == "" && c.apiKey == "" {
		c.apiKey = strings.TrimSpace(os.Getenv(envAPIKey))
	}
	if c.server == "" {
		return fmt.Errorf("--server is required (the coordination server vouching for nodes; or $%s)", envServer)
	}
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server %q is not an http(s) URL", c.server)
	}
	switch {
	case c.relayKey != "" && c.apiKey != "":
		return errors.New("--relay-key and --api-key: give one (a relay key is enough)")
	case c.relayKey == "" && c.apiKey == "":
		return fmt.Errorf("--relay-key is required (or $%s; create one with 'warren server apikey create --scope relay')", envRelayKey)
	case c.relayKey != "" && !strings.HasPrefix(c.relayKey, "wrly_"):
		return errors.New("--relay-key does not look like a relay key (wrly_...)")
	case strings.HasPrefix(c.apiKey, "wrly_"):
		c.relayKey, c.apiKey = c.apiKey, "" // a relay key given as --api-key
	case c.apiKey != "" && !strings.HasPrefix(c.apiKey, "wapi_"):
		return errors.New("--api-key does not look like an admin API key (wapi_...)")
	}
	if c.poll < 100*time.Millisecond {
		return errors.New("--poll must be at least 100ms")
	}
	if _, err := parsePerSourceCap(c.maxConns); err != nil {
		return err
	}
	if err := c.limits.options(&relayserver.Options{}, ""); err != nil {
		return err
	}
	return checkKeyTransport(u, "--server", c.insecure)
}

func runRelay(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "key" {
		return runRelayKey(args[1:], stdout, stderr)
	}
	fs, c := relayFlags(stderr)
	if code, done := quietParse(fs, func() error { return fs.Parse(args) }, "warren relay", stdout, stderr, func(w io.Writer) { relayUsage(w, fs) }); done {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "warren relay: unexpected argument %q (subcommand: key)\n", fs.Arg(0))
		return 2
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(stderr, "warren relay: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer profileFromEnv(stderr)()
	return serveRelay(ctx, c, stderr)
}

// serveRelay runs a standalone relay until ctx ends.
func serveRelay(ctx context.Context, c *relayConfig, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "warren relay: "+format+"\n", args...)
		return 1
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fail("data dir: %v", err)
	}
	key, err := loadServerKey(filepath.Join(c.dataDir, relayKeyFile), true)
	if err != nil {
		return fail("%v", err)
	}
	logger := newServiceLog(stderr, "relay", false)
	cred := c.relayKey
	if c.apiKey != "" {
		// Still accepted, so that relays set up before relay keys existed
		// keep working; it only ever reads the relay's node list, but a
		// stolen copy could do anything.
		fmt.Fprintln(stderr, "warren relay: warning: --api-key is a full admin key; the relay needs only a read-only relay key ('warren server apikey create --scope relay', then --relay-key)")
		cred = c.apiKey
	}
	poller := &relayserver.AdminPoller{ServerURL: c.server, APIKey: cred, Interval: c.poll,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirects}, Logger: logger}
	// Fail fast on a wrong server or key; later failures keep the last list.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = poller.Poll(pctx)
	cancel()
	if err != nil {
		return fail("%v", err)
	}
	ropts := relayserver.Options{Key: key, Allowed: poller.Allowed, Logger: logger}
	if err := c.limits.options(&ropts, ""); err != nil { // checked by check
		return fail("%v", err)
	}
	rs, err := relayserver.NewServer(ropts)
	if err != nil {
		return fail("%v", err)
	}
	defer rs.Close()
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go poller.Run(rctx)
	hosts := listenerHosts(c.listen, "", c.tlsCert, c.allowedHosts)
	if c.metricsListen != "" {
		if _, err := metrics.Serve(rctx, c.metricsListen, metrics.Registry(servermetrics.Relay{R: rs}), logger, hosts...); err != nil {
			return fail("--metrics-listen: %v", err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle(relay.Path, rs)
	// Ready while the server vouching for nodes answers its polls (the
	// relay keeps serving with the last list when it does not).
	mountHealth(mux, func(context.Context) error {
		if err := poller.Err(); err != nil {
			return notReady{"vouching server unreachable", err}
		}
		return nil
	}, logger)
	hs := &http.Server{Handler: mux, ErrorLog: httpErrorLog(logger)}
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fail("%v", err)
	}
	perSource, _ := parsePerSourceCap(c.maxConns) // checked by check
	l = guardPublic(hs, l, hosts, perSource, "; add the name with --allowed-hosts", logger)
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stderr, "warren relay: listening on %s://%s, public key %s\n", scheme, l.Addr(), rs.PublicKey())
	if c.stunListen != "" {
		a, _, err := stun.Listen(rctx, c.stunListen)
		if err != nil {
			l.Close()
			return fail("%v", err)
		}
		fmt.Fprintf(stderr, "warren relay: STUN on udp %s\n", a)
	}
	defer notifyServing(ctx, logger, selfProbe(l.Addr(), c.tlsCert != ""))() // READY=1 now, STOPPING=1 when ctx ends
	if err := serveUntil(ctx, hs, l, c.tlsCert, c.tlsKey, 5*time.Second); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(stderr, "warren relay: shutting down")
	rs.Close() // sessions are hijacked: Shutdown does not see them
	return 0
}

// runRelayKey: `warren relay key` prints the public key for the relay map.
func runRelayKey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay key", flag.ContinueOnError)
	dataDir := fs.String("data-dir", defaultRelayDataDir, "directory holding the relay key")
	if code, done := quietParse(fs, func() error { return fs.Parse(args) }, "warren relay key", stdout, stderr, func(w io.Writer) { relayUsage(w, fs) }); done {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "warren relay key: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	path := filepath.Join(*dataDir, relayKeyFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "warren relay key: no relay key at %s (start `warren relay` once to create it)\n", path)
		return 1
	}
	k, err := loadServerKey(path, false)
	if err != nil {
		fmt.Fprintf(stderr, "warren relay key: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.PublicKey().String())
	return 0
}

// embeddedRelay mounts a relay using the coordination server's key and
// store on mux (`warren server --relay`) and starts a STUN responder when
// stunListen is set (returning its address). The returned function closes
// the relay's sessions.
func embeddedRelay(ctx context.Context, mux *http.ServeMux, opts relayserver.Options, stunListen string) (func(), net.Addr, *relayserver.Server, error) {
	closeFn := func() {}
	var rs *relayserver.Server
	if opts.Allowed != nil {
		var err error
		if rs, err = relayserver.NewServer(opts); err != nil {
			return nil, nil, nil, err
		}
		mux.Handle(relay.Path, rs)
		closeFn = func() { rs.Close() }
	}
	if stunListen != "" {
		a, _, err := stun.Listen(ctx, stunListen)
		if err != nil {
			closeFn()
			return nil, nil, nil, err
		}
		return closeFn, a, rs, nil
	}
	return closeFn, nil, rs, nil
}
