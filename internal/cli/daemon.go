package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

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
	return localapi.DefaultSocket
}

func daemonCmd(s *streams) *cobra.Command {
	var cfg daemon.Config
	var port uint
	var verbose bool
	var lo logOptions
	c := &cobra.Command{
		Use:   "daemon [flags]",
		Short: "run the node agent (as root, in the foreground)",
		Long: `Runs the node agent in the foreground (as root, or with CAP_NET_ADMIN and
CAP_NET_RAW): the tunnel interface, the connection to the coordination
server, paths to peers, MagicDNS. The other node verbs (up, status, ...)
talk to it over its local API socket.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose && !cmd.Flags().Changed("log-level") {
				lo.level = "debug"
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
