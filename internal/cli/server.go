package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/console"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/store"
)

// serverConfig is what `warren server` and its subcommands run with: the
// keys of config.Server, from flags, WARREN_* variables and the YAML
// config file (package config does the layering and the checks).
type serverConfig struct {
	cfg *config.Config
	// flags re-read the layers on SIGHUP.
	flags *config.Flags
	// warnings (a deprecated JSON file) are logged once the logger exists.
	warnings []string
}

const serverKeyFile = "server.key"

// serverFlags binds config.Server onto a command's flags: all its keys
// (`warren server`), or those locating the data (the subcommands: data
// dir, database, prefixes; they still read the rest of the file and the
// environment, and check it).
type serverFlags struct {
	fs    *pflag.FlagSet
	flags *config.Flags
}

func newServerFlags(name string, all bool) *serverFlags {
	sf := &serverFlags{fs: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	sf.fs.SortFlags = false
	if all {
		sf.flags = config.Server.Bind(sf.fs)
	} else {
		sf.flags = config.Server.Bind(sf.fs, "data_dir", "db", "ipv4_prefix", "ipv6_prefix")
	}
	return sf
}

// resolve reads the layers: defaults, the config file, the environment,
// the flags given on the command line.
func (sf *serverFlags) resolve() (serverConfig, error) {
	c := serverConfig{flags: sf.flags}
	cfg, err := sf.flags.Load(func(w string) { c.warnings = append(c.warnings, w) })
	if err != nil {
		return c, err
	}
	c.cfg = cfg
	return c, nil
}

func (c serverConfig) dataDir() string { return config.Get(c.cfg, config.ServerDataDir) }

// db is the database DSN: db, or SQLite in the data dir.
func (c serverConfig) db() string {
	if db := config.Get(c.cfg, config.ServerDB); db != "" {
		return db
	}
	return "sqlite:" + filepath.Join(c.dataDir(), "warren.db")
}

// storeOptions are the address prefixes (zero: the store's defaults).
func (c serverConfig) storeOptions() store.Options {
	return store.Options{IPv4Prefix: config.Get(c.cfg, config.ServerIPv4Prefix), IPv6Prefix: config.Get(c.cfg, config.ServerIPv6Prefix)}
}

func (c serverConfig) openStore(ctx context.Context) (*store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return store.Open(ctx, c.db(), c.storeOptions())
}

// storeExists checks, for the subcommands that use an existing store,
// that its SQLite database (and data dir) exists, so that a mistyped
// --data-dir or --db fails instead of creating an empty store; only
// `warren server` creates them. A PostgreSQL database that does not exist
// fails when opened.
func (c serverConfig) storeExists() error {
	db := c.db()
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		return nil
	}
	path := strings.TrimPrefix(db, "sqlite:")
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	hint := "check --data-dir, --db or the config; `warren server` creates it on its first start"
	if dir := filepath.Dir(path); dir == c.dataDir() {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data dir %s does not exist (%s)", dir, hint)
		}
	}
	return fmt.Errorf("database %s does not exist (%s)", path, hint)
}

func (c serverConfig) keyPath() string { return filepath.Join(c.dataDir(), serverKeyFile) }

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

func serverCmd(s *streams) *cobra.Command {
	sf := newServerFlags("server", true)
	c := &cobra.Command{
		Use:   "server [flags]",
		Short: "run the coordination server (and its subcommands: apikey, key, configtest)",
		Long: `Runs the coordination server in the foreground. One HTTP server serves the
control protocol (/warren/v1/), the admin API (/api/v1/, see 'warren admin
--help') and, with --relay, a packet relay. The subcommands use the store
directly, on the server host, and only an existing one (start the server
once first).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q (subcommands: apikey, key, configtest)", args[0])
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			c, err := sf.resolve()
			if err != nil {
				return usageErr{err.Error()}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			defer profileFromEnv(s.stderr)()
			return exit(serve(ctx, c, s.stderr))
		},
	}
	c.Flags().AddFlagSet(sf.fs)
	apikey := groupCmd("apikey", "create and list admin API keys in the store", "", serverAPIKeyCreateCmd(s), serverAPIKeyListCmd(s))
	apikey.Aliases = []string{"apikeys"}
	c.AddCommand(apikey, serverKeyCmd(s), configtestCmd(s, config.Server))
	return c
}

// serve runs the server until ctx ends, then shuts it down gracefully.
// A SIGHUP re-reads the config's reloadable keys and the certificate
// files.
func serve(ctx context.Context, c serverConfig, stderr io.Writer) int {
	cfg := c.cfg
	var level slog.LevelVar
	logger, err := serviceLogger(stderr, cfg, config.ServerLog, &level)
	if err != nil {
		fmt.Fprintf(stderr, "warren server: %v\n", err)
		return 2
	}
	logger = logger.With("component", "server")
	for _, w := range c.warnings {
		logger.Warn(w)
	}
	// Once the logger exists, a failure is its last record.
	fail := func(format string, args ...any) int {
		logger.Error("server failed: " + fmt.Sprintf(format, args...))
		return 1
	}
	dataDir := c.dataDir()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fail("data dir: %v", err)
	}
	key, err := loadServerKey(c.keyPath(), true)
	if err != nil {
		return fail("%v", err)
	}
	certs, err := serviceCerts(cfg, config.ServerTLS, dataDir, logger)
	if err != nil {
		return fail("%v", err)
	}
	st, err := c.openStore(ctx)
	if err != nil {
		return fail("%v", err)
	}
	defer st.Close()
	replica, err := claimReplica(ctx, st, key)
	if err != nil {
		return fail("%v", err)
	}
	mux := http.NewServeMux()
	ropts := relayserver.Options{Key: key, Logger: logger, Rate: config.Get(cfg, config.ServerRelayRate),
		Burst: config.Get(cfg, config.ServerRelayBurst), QueuePackets: int(config.Get(cfg, config.ServerRelayQueue))}
	withRelay := config.Get(cfg, config.ServerRelay)
	if withRelay {
		ropts.Allowed = relayserver.StoreAllowed(st, 5*time.Second)
	}
	closeRelay, stunAddr, rs, err := embeddedRelay(ctx, mux, ropts, config.Get(cfg, config.ServerSTUNListen))
	if err != nil {
		return fail("%v", err)
	}
	defer closeRelay()
	listen, publicURL := config.Get(cfg, config.ServerListen), config.Get(cfg, config.ServerPublicURL)
	regions, err := relayRegions(withRelay, listen, publicURL, config.Get(cfg, config.ServerRelayMap), certs != nil, key.PublicKey(), stunAddr)
	if err != nil {
		return fail("%v", err)
	}
	offered, own, err := replicaRelays(replica, withRelay, regions) // server_relays.go
	if err != nil {
		return fail("%v", err)
	}
	srv := server.New(st, key, server.Options{Domain: config.Get(cfg, config.ServerDomain),
		EphemeralGrace: config.Get(cfg, config.ServerEphemeralGrace), AuditKeep: config.Get(cfg, config.ServerAuditKeep), TrafficInterval: config.Get(cfg, config.ServerWireGuardTrafficInterval), Relays: offered, ReplicaRelay: own, Logger: logger, Replica: replica,
		Interactive: interactiveOptions(cfg)}) // server_oidc.go
	defer srv.Close()
	mux.Handle("/", srv.Handler())
	api := admin.New(st, srv.Notify, admin.WithDomain(srv.Domain()), admin.WithLogger(logger))
	mux.Handle(admin.Prefix, api)
	oauth, err := oidcAuth(ctx, mux, cfg, st, logger, srv.CompleteRegistration) // server_oidc.go
	if err != nil {
		return fail("%v", err)
	}
	copts := console.Options{Store: st, API: api, World: srv, Logger: logger,
		Secure: certs != nil || strings.HasPrefix(publicURL, "https://")}
	if oauth != nil {
		copts.Authenticators = []console.Authenticator{oidcConsole{oauth}} // console_oidc.go
	}
	con, err := console.New(copts)
	if err != nil {
		return fail("%v", err)
	}
	defer con.Close()
	mux.Handle(console.Prefix, con)
	mountHealth(mux, func(ctx context.Context) error { return storeReady(ctx, st) }, logger) // health.go
	hosts := listenerHosts(listen, publicURL, config.Get(cfg, config.ServerAllowedHosts))
	if certs != nil {
		hosts = append(hosts, certs.Names()...)
	}
	if m := config.Get(cfg, config.ServerMetricsListen); m != "" {
		if _, err := metrics.Serve(ctx, m, serverCollectors(srv, rs), logger, hosts...); err != nil {
			return fail("metrics_listen: %v", err)
		}
	}
	if err := serveHTTP01(ctx, certs, config.Get(cfg, config.ServerTLS.ACMEHTTPListen), hosts, logger); err != nil {
		return fail("%v", err)
	}
	hs := &http.Server{Handler: mux, ErrorLog: httpErrorLog(logger)}
	hs.RegisterOnShutdown(con.Close) // the console's live streams never go idle
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fail("%v", err)
	}
	l = guardPublic(hs, l, hosts, certNamesNow(certs), int(config.Get(cfg, config.ServerMaxConnsPerIP)),
		"; add the name with public_url or allowed_hosts", logger)
	scheme := "http"
	if certs != nil {
		scheme = "https"
		hs.TLSConfig = certs.TLSConfig()
	}
	logger.Info("listening", "url", fmt.Sprintf("%s://%s", scheme, l.Addr()), "public_key", srv.PublicKey().String(),
		"config", cfg.File, "ephemeral_grace", config.Get(cfg, config.ServerEphemeralGrace).String())
	if withRelay {
		logger.Info("relay", "url", fmt.Sprintf("%s://%s%s", scheme, l.Addr(), relay.Path), "public_url", regions[0].URL)
	}
	if stunAddr != nil {
		logger.Info("STUN", "udp", stunAddr.String())
	}
	reloadOnSIGHUP(ctx, c.flags, cfg, config.ServerLog, config.ServerTLS, &level, certs, logger)
	defer notifyServing(ctx, logger, selfProbe(l.Addr(), certs != nil))() // READY=1 now, STOPPING=1 when ctx ends
	if err := serveUntil(ctx, hs, l, 10*time.Second); err != nil {
		return fail("%v", err)
	}
	logger.Info("shutting down")
	srv.Close() // control streams are hijacked: Shutdown does not see them
	closeRelay()
	return 0
}
