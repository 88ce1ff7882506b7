package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/metrics/servermetrics"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/stun"
)

const relayKeyFile = "relay.key"

// relayConfig is what `warren relay` runs with: the keys of config.Relay
// from flags, WARREN_* variables (WARREN_SERVER, WARREN_RELAY_KEY and
// WARREN_API_KEY among them) and the YAML config file, read by check.
type relayConfig struct {
	flags    *config.Flags
	cfg      *config.Config
	warnings []string // logged once the logger exists
	// The credential and rate check settles (a relay key given as
	// api_key is used as the relay key; rate 0: no limit).
	server, apiKey, relayKey string
	rate                     int64
}

// relayFlags makes the flag set of `warren relay` (every key of
// config.Relay); the cobra command adds it to its own flags.
func relayFlags() (*pflag.FlagSet, *relayConfig) {
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	fs.SortFlags = false
	return fs, &relayConfig{flags: config.Relay.Bind(fs)}
}

// envRelayKey is the environment variable of `warren relay --relay-key`.
var envRelayKey = config.RelayRelayKey.Env()

// check reads the layers and checks what goes together beyond the
// schema: a server, and a credential fit to send to it.
func (c *relayConfig) check() error {
	c.warnings = nil
	cfg, err := c.flags.Load(func(w string) { c.warnings = append(c.warnings, w) })
	if err != nil {
		return err
	}
	c.cfg = cfg
	c.server = config.Get(cfg, config.RelayServer)
	c.relayKey, c.apiKey = config.Get(cfg, config.RelayRelayKey), config.Get(cfg, config.RelayAPIKey)
	if c.server == "" {
		return fmt.Errorf("--server is required (the coordination server vouching for nodes; or $%s)", envServer)
	}
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server %q is not an http(s) URL", c.server)
	}
	switch {
	case c.relayKey == "" && c.apiKey == "":
		return fmt.Errorf("--relay-key is required (or $%s; create one with 'warren server apikey create --scope relay')", envRelayKey)
	case strings.HasPrefix(c.apiKey, "wrly_"):
		c.relayKey, c.apiKey = c.apiKey, "" // a relay key given as --api-key
	}
	c.rate = config.Get(cfg, config.RelayRate) // 0: no limit
	return checkKeyTransport(u, "--server", config.Get(cfg, config.RelayInsecure))
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
			defer profileFromEnv(s.stderr)()
			return exit(serveRelay(ctx, rc, s.stderr))
		},
	}
	c.Flags().AddFlagSet(fs)
	c.AddCommand(relayKeyCmd(s), configtestCmd(s, config.Relay))
	return c
}

// serveRelay runs a standalone relay until ctx ends (c checked). A
// SIGHUP re-reads the config's reloadable keys and the certificate files.
func serveRelay(ctx context.Context, c *relayConfig, stderr io.Writer) int {
	cfg := c.cfg
	var level slog.LevelVar
	logger, err := serviceLogger(stderr, cfg, config.RelayLog, &level)
	if err != nil {
		fmt.Fprintf(stderr, "warren relay: %v\n", err)
		return 2
	}
	logger = logger.With("component", "relay")
	for _, w := range c.warnings {
		logger.Warn(w)
	}
	// Once the logger exists, a failure is its last record.
	fail := func(format string, args ...any) int {
		logger.Error("relay failed: " + fmt.Sprintf(format, args...))
		return 1
	}
	dataDir := config.Get(cfg, config.RelayDataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fail("data dir: %v", err)
	}
	key, err := loadServerKey(filepath.Join(dataDir, relayKeyFile), true)
	if err != nil {
		return fail("%v", err)
	}
	certs, err := serviceCerts(cfg, config.RelayTLS, dataDir, logger)
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
	poller := &relayserver.AdminPoller{ServerURL: c.server, APIKey: cred, Interval: config.Get(cfg, config.RelayPoll),
		HTTPClient: &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirects}, Logger: logger}
	// Fail fast on a wrong server or key; later failures keep the last list.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = poller.Poll(pctx)
	cancel()
	if err != nil {
		return fail("%v", err)
	}
	rs, err := relayserver.NewServer(relayserver.Options{Key: key, Allowed: poller.Allowed, Rate: c.rate,
		Burst: config.Get(cfg, config.RelayBurst), QueuePackets: int(config.Get(cfg, config.RelayQueue)), Logger: logger})
	if err != nil {
		return fail("%v", err)
	}
	defer rs.Close()
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go poller.Run(rctx)
	listen := config.Get(cfg, config.RelayListen)
	hosts := listenerHosts(listen, "", config.Get(cfg, config.RelayAllowedHosts))
	if certs != nil {
		hosts = append(hosts, certs.Names()...)
	}
	if m := config.Get(cfg, config.RelayMetricsListen); m != "" {
		if _, err := metrics.Serve(rctx, m, metrics.Registry(servermetrics.Relay{R: rs}), logger, hosts...); err != nil {
			return fail("metrics_listen: %v", err)
		}
	}
	if err := serveHTTP01(rctx, certs, config.Get(cfg, config.RelayTLS.ACMEHTTPListen), hosts, logger); err != nil {
		return fail("%v", err)
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
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fail("%v", err)
	}
	l = guardPublic(hs, l, hosts, certNamesNow(certs), int(config.Get(cfg, config.RelayMaxConnsPerIP)),
		"; add the name with allowed_hosts", logger)
	scheme := "http"
	if certs != nil {
		scheme = "https"
		hs.TLSConfig = certs.TLSConfig()
	}
	logger.Info("listening", "url", fmt.Sprintf("%s://%s", scheme, l.Addr()), "public_key", rs.PublicKey().String(), "config", cfg.File)
	if sl := config.Get(cfg, config.RelaySTUNListen); sl != "" {
		a, _, err := stun.Listen(rctx, sl)
		if err != nil {
			l.Close()
			return fail("%v", err)
		}
		logger.Info("STUN", "udp", a.String())
	}
	reloadOnSIGHUP(ctx, c.flags, cfg, config.RelayLog, config.RelayTLS, &level, certs, logger)
	defer notifyServing(ctx, logger, selfProbe(l.Addr(), certs != nil))() // READY=1 now, STOPPING=1 when ctx ends
	if err := serveUntil(ctx, hs, l, 5*time.Second); err != nil {
		return fail("%v", err)
	}
	logger.Info("shutting down")
	rs.Close() // sessions are hijacked: Shutdown does not see them
	return 0
}

func relayKeyCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "key [flags]", Short: "print the relay's public key (for the relay map)", Args: noArgs}
	flags := config.Relay.Bind(c.Flags(), "data_dir")
	c.RunE = func(*cobra.Command, []string) error {
		cfg, err := flags.Load(nil)
		if err != nil {
			return usageErr{err.Error()}
		}
		return exit(runRelayKey(config.Get(cfg, config.RelayDataDir), s.stdout, s.stderr))
	}
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
