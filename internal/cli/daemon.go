package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/warrenmesh/warren/internal/daemon"
	"github.com/warrenmesh/warren/internal/localapi"
)

func init() {
	register(command{"daemon", "daemon [FLAGS]       run the node agent (see 'warren daemon --help')", runDaemon})
}

// envSocket overrides the default local API socket for every node verb.
const envSocket = "WARREN_SOCKET"

func defaultSocket() string {
	if s := os.Getenv(envSocket); s != "" {
		return s
	}
	return localapi.DefaultSocket
}

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg daemon.Config
	var port uint
	var verbose bool
	fs.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "directory for the node key, preferences and last network map")
	fs.StringVar(&cfg.Socket, "socket", defaultSocket(), "local API socket (env "+envSocket+")")
	fs.StringVar(&cfg.SocketGroup, "socket-group", "", "group allowed to use the local API besides root")
	fs.StringVar(&cfg.TUN, "tun", daemon.DefaultTUN, "tunnel interface name")
	fs.UintVar(&port, "port", daemon.DefaultPort, "UDP port for WireGuard traffic (0 = any)")
	fs.IntVar(&cfg.MTU, "mtu", 0, "tunnel MTU (default 1420)")
	fs.BoolVar(&verbose, "verbose", false, "log debug messages")
	fs.StringVar(&cfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "host resolver file that `up --accept-dns` points at MagicDNS")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: warren daemon [FLAGS]\n\nRuns the node agent in the foreground (as root). Flags:")
		fs.PrintDefaults()
	}
	if code, ok := parseVerb(fs, args, 0, stderr); !ok {
		return code
	}
	if port > 65535 {
		fmt.Fprintf(stderr, "warren daemon: --port %d: must be 0..65535\n", port)
		return 2
	}
	cfg.Port = uint16(port)
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
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
		fmt.Fprintf(stderr, "warren daemon: %v\n", oneLine(err))
		return 1
	}
	return 0
}

// oneLine folds a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// socketFlag adds --socket to a node verb's flags.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", defaultSocket(), "the daemon's local API socket (env "+envSocket+")")
}

// parseVerb parses a node verb's flags, handling --help and stray
// arguments; ok false means return code.
func parseVerb(fs *flag.FlagSet, args []string, maxArgs int, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintf(stderr, "usage: warren %s [FLAGS]\n", fs.Name())
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0, false
		}
		fmt.Fprintf(stderr, "warren %s: %v (see --help)\n", fs.Name(), err)
		return 2, false
	}
	if fs.NArg() > maxArgs {
		fmt.Fprintf(stderr, "warren %s: unexpected argument %q\n", fs.Name(), fs.Arg(maxArgs))
		return 2, false
	}
	return 0, true
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
