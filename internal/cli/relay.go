package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/metrics/servermetrics"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/stun"
)

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
	rate, burst                 int64
	queue                       int
	metricsListen               string
	allowedHosts, maxConns      string
	log                         logOptions
}

// relayFlags makes the flag set of `warren relay`; the cobra command adds
// it to its own flags.
func relayFlags() (*pflag.FlagSet, *relayConfig) {
	c := &relayConfig{}
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&c.listen, "listen", defaultRelayListen, "`ADDR` to serve the relay on (HTTP, or HTTPS with --tls-cert)")
	fs.StringVar(&c.stunListen, "stun-listen", defaultSTUNListen, "UDP `ADDR` to answer STUN on (\"\" disables)")
	fs.StringVar(&c.dataDir, "data-dir", defaultRelayDataDir, "`DIR` for the relay key (created 0700)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate `FILE` (PEM; needs --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "private key `FILE` for --tls-cert (PEM)")
	fs.StringVar(&c.server, "server", "", "coordination server `URL`; nodes it knows may use the relay (default $"+envServer+")")
	fs.StringVar(&c.relayKey, "relay-key", "", "relay `KEY` wrly_... to list nodes with, read-only (default $"+envRelayKey+"; create it with 'warren server apikey create --scope relay')")
	fs.StringVar(&c.apiKey, "api-key", "", "an admin API `KEY` wapi_... instead of --relay-key: works, but over-privileged (default $"+envAPIKey+")")
	fs.BoolVar(&c.insecure, "insecure", false, "send the key over plain http to a remote (not loopback) server")
	fs.DurationVar(&c.poll, "poll", 5*time.Second, "how often to fetch the node list")
	fs.Int64Var(&c.rate, "rate", relayserver.DefaultRate, "`BYTES` per second one node may send (0: unlimited)")
	fs.Int64Var(&c.burst, "burst", relayserver.DefaultBurst, "`BYTES` one node may send in a burst")
	fs.IntVar(&c.queue, "queue", relayserver.DefaultQueuePackets, "`PACKETS` queued towards one node before new ones are dropped")
	fs.StringVar(&c.allowedHosts, "allowed-hosts", "", "comma-separated `HOSTS` nodes reach this relay by (its name in the relay map; IP addresses, localhost, the TLS certificate's names and the machine's host name are always served); requests for other names are refused (DNS rebinding protection)")
	fs.StringVar(&c.maxConns, "max-conns-per-ip", "", fmt.Sprintf("concurrent connections accepted from one source address (`N`, default %d; 0: no cap)", httpguard.DefaultPerSource))
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "serve Prometheus metrics on http://`ADDR`/metrics (a bare PORT binds to 127.0.0.1; off by default)")
	c.log.bind(fs, "info")
	return fs, c
}

// envRelayKey is the environment default of `warren relay --relay-key`.
const envRelayKey = "WARREN_RELAY_KEY"

func (c *relayConfig) check() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.dataDir == "" {
		return errors.New("--data-dir is empty")
	}
	if _, err := c.log.logger(io.Discard); err != nil {
		return err
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
	if c.rate < 0 || c.burst <= 0 || c.queue <= 0 {
		return errors.New("--rate must not be negative, --burst and --queue must be positive")
	}
	return checkKeyTransport(u, "--server", c.insecure)
}

func relayCmd(s *streams) *cobra.Command {
	fs, rc := relayFlags()
	c := &cobra.Command{
		Use:   "relay --server URL --relay-key KEY [flags]",
		Short: "run a packet relay and STUN responder (and its subcommands: key, configtest)",
		Long: `Runs a relay in the foreground. The relay forwards WireGuard packets between
nodes over HTTP(S) (path ` + relay.Path + `) for nodes that cannot reach each
other directly, and answers STUN on UDP. Only nodes the coordination server
lists (and has not expired) may connect; it polls the server's node keys
with a relay key (read-only; 'warren server apikey create --scope relay' or
'warren admin apikeys create --scope relay' makes one).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q (subcommands: key, configtest)", args[0])
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			if err := rc.check(); err != nil {
				return usageErr{err.Error()}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return exit(serveRelay(ctx, rc, s.stderr))
		},
	}
	c.Flags().AddFlagSet(fs)
	c.AddCommand(relayKeyCmd(s), configtestCmd(s, config.Relay))
	return c
}

// serveRelay runs a standalone relay until ctx ends.
func serveRelay(ctx context.Context, c *relayConfig, stderr io.Writer) int {
	logger, err := c.log.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "warren relay: %v\n", err)
		return 2
	}
	logger = logger.With("component", "relay")
	// Once the logger exists, a failure is its last record.
	fail := func(format string, args ...any) int {
		logger.Error("relay failed: " + fmt.Sprintf(format, args...))
		return 1
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fail("data dir: %v", err)
	}
	key, err := loadServerKey(filepath.Join(c.dataDir, relayKeyFile), true)
	if err != nil {
		return fail("%v", err)
	}
	cred := c.relayKey
	if c.apiKey != "" {
		// Still accepted, so that relays set up before relay keys existed
		// keep working; it only ever reads the relay's node list, but a
		// stolen copy could do anything.
		logger.Warn("--api-key is a full admin key; the relay needs only a read-only relay key ('warren server apikey create --scope relay', then --relay-key)")
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
	rate := c.rate
	if rate == 0 {
		rate = -1
	}
	rs, err := relayserver.NewServer(relayserver.Options{Key: key, Allowed: poller.Allowed, Rate: rate, Burst: c.burst,
		QueuePackets: c.queue, Logger: logger})
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
	logger.Info("listening", "url", fmt.Sprintf("%s://%s", scheme, l.Addr()), "public_key", rs.PublicKey().String())
	if c.stunListen != "" {
		a, _, err := stun.Listen(rctx, c.stunListen)
		if err != nil {
			l.Close()
			return fail("%v", err)
		}
		logger.Info("STUN", "udp", a.String())
	}
	defer notifyServing(ctx, logger, selfProbe(l.Addr(), c.tlsCert != ""))() // READY=1 now, STOPPING=1 when ctx ends
	if err := serveUntil(ctx, hs, l, c.tlsCert, c.tlsKey, 5*time.Second); err != nil {
		return fail("%v", err)
	}
	logger.Info("shutting down")
	rs.Close() // sessions are hijacked: Shutdown does not see them
	return 0
}

func relayKeyCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "key [flags]", Short: "print the relay's public key (for the relay map)", Args: noArgs}
	dataDir := c.Flags().String("data-dir", defaultRelayDataDir, "`DIR` holding the relay key")
	c.RunE = func(*cobra.Command, []string) error { return exit(runRelayKey(*dataDir, s.stdout, s.stderr)) }
	return c
}

// runRelayKey: `warren relay key` prints the public key for the relay map.
func runRelayKey(dataDir string, stdout, stderr io.Writer) int {
	path := filepath.Join(dataDir, relayKeyFile)
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
