package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/daemon"
	"github.com/warrenmesh/warren/internal/localapi"
)

// envSocket overrides the default local API socket for every node verb.
const envSocket = "WARREN_SOCKET"

func defaultSocket() string {
	if s := os.Getenv(envSocket); s != "" {
		return s
	}
	if os.Geteuid() != 0 {
		// An ordinary user's userspace daemon, if one runs.
		if dir, err := userStateDir(); err == nil {
			if s := userSocket(dir); socketExists(s) {
				return s
			}
		}
	}
	return localapi.DefaultSocket
}

// userStateDir is a userspace daemon's default state directory:
// $XDG_STATE_HOME/warren, else ~/.local/state/warren.
func userStateDir() (string, error) {
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "warren"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "warren"), nil
}

// userSocket is a userspace daemon's default local API socket:
// $XDG_RUNTIME_DIR/warren/warrend.sock, else in its state directory.
func userSocket(stateDir string) string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return filepath.Join(x, "warren", "warrend.sock")
	}
	return filepath.Join(stateDir, "warrend.sock")
}

func socketExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func daemonCmd(s *streams) *cobra.Command {
	var cfg daemon.Config
	var port uint
	var verbose bool
	var lo logOptions
	c := &cobra.Command{
		Use:   "daemon [flags]",
		Short: "run the node agent (as root, or as any user with --userspace; in the foreground)",
		Long: `Runs the node agent in the foreground (as root, or with CAP_NET_ADMIN and
CAP_NET_RAW): the tunnel interface, the connection to the coordination
server, paths to peers, MagicDNS. The other node verbs (up, status, ...)
talk to it over its local API socket. With --userspace it needs no root,
TUN, netlink or nftables: the node lives in a userspace network stack and
programs reach the mesh through --socks5 or --http-proxy.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose && !cmd.Flags().Changed("log-level") {
				lo.level = "debug"
			}
			if cfg.Userspace {
				if !cmd.Flags().Changed("state-dir") {
					dir, err := userStateDir()
					if err != nil {
						return usagef("--userspace: %v; pass --state-dir", err)
					}
					cfg.StateDir = dir
				}
				if !cmd.Flags().Changed("socket") && os.Getenv(envSocket) == "" {
					cfg.Socket = userSocket(cfg.StateDir)
				}
			}
			return exit(runDaemon(cfg, port, lo, s.stderr))
		},
	}
	fs := c.Flags()
	fs.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "`DIR` for the node key, preferences and last network map")
	fs.StringVar(&cfg.Socket, "socket", defaultSocket(), "local API socket `PATH` (env "+envSocket+")")
	fs.StringVar(&cfg.SocketGroup, "socket-group", "", "`GROUP` allowed to use the local API besides root")
	fs.StringVar(&cfg.TUN, "tun", daemon.DefaultTUN, "tunnel interface `NAME`")
	fs.UintVar(&port, "port", daemon.DefaultPort, "UDP `PORT` for WireGuard traffic (0 = any)")
	fs.IntVar(&cfg.MTU, "mtu", 0, "tunnel `MTU` (default 1420)")
	fs.BoolVar(&cfg.NoPortMap, "no-portmap", false, "do not ask the LAN's gateway (PCP, NAT-PMP, UPnP-IGD) to map the UDP port")
	fs.StringVar(&cfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "host resolver `FILE` that 'up --accept-dns' points at MagicDNS")
	fs.BoolVar(&cfg.Userspace, "userspace", false, "run without TUN, netlink, nftables or root: a userspace network stack; programs reach the mesh through --socks5/--http-proxy (state and socket default to the user's directories)")
	fs.StringVar(&cfg.SOCKS5, "socks5", "", "userspace: serve a SOCKS5 proxy to the mesh on this loopback `IP:PORT` (e.g. 127.0.0.1:1055)")
	fs.StringVar(&cfg.HTTPProxy, "http-proxy", "", "userspace: serve an HTTP proxy (CONNECT and plain HTTP) to the mesh on this loopback `IP:PORT` (e.g. 127.0.0.1:1056)")
	fs.BoolVar(&cfg.ForwardInbound, "forward-inbound", false, "userspace: forward TCP connections from the mesh to the node's addresses to the same port on the host's 127.0.0.1")
	fs.DurationVar(&cfg.ProxyDialTimeout, "proxy-dial-timeout", 30*time.Second, "userspace: how long a proxy waits for a mesh destination to answer")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on http://`ADDR`/metrics (a bare PORT binds to 127.0.0.1; off by default)")
	lo.bind(fs, "info")
	fs.BoolVar(&verbose, "verbose", false, "log debug messages (as --log-level debug)")
	return c
}

func runDaemon(cfg daemon.Config, port uint, lo logOptions, stderr io.Writer) int {
	if port > 65535 {
		fmt.Fprintf(stderr, "warren daemon: --port %d: must be 0..65535\n", port)
		return 2
	}
	cfg.Port = uint16(port)
	logger, err := lo.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "warren daemon: %v\n", err)
		return 2
	}
	cfg.Logger = logger
	cfg.Version = currentVersion().Version
	d, err := daemon.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "warren daemon: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer profileFromEnv(stderr)()
	defer stop()
	// Under systemd: READY=1 once the local API answers, WATCHDOG=1 while
	// it does, STOPPING=1 when the daemon begins to shut down.
	var stopNotify func()
	ready := func() {
		lc := localapi.NewClient(cfg.Socket)
		stopNotify = notifyServing(ctx, cfg.Logger, func(ctx context.Context) error { _, err := lc.Status(ctx); return err })
	}
	err = d.Run(ctx, ready)
	if stopNotify != nil {
		stopNotify()
	}
	if err != nil {
		logger.Error("daemon failed", "err", oneLine(err))
		return 1
	}
	return 0
}

// oneLine folds a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// socketFlag adds --socket to a node verb's flags.
func socketFlag(fs *pflag.FlagSet) *string {
	return fs.String("socket", defaultSocket(), "the daemon's local API socket `PATH` (env "+envSocket+")")
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
