package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

func emitJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// readAuthKey accepts a key, or "file:PATH" to keep it out of ps output.
func readAuthKey(s string) (string, error) {
	if path, ok := strings.CutPrefix(s, "file:"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--auth-key: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return s, nil
}

func upCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "up [flags]",
		Short: "join a warren (--server URL, with --auth-key KEY or by signing in) and bring the node up",
		Long: `Joins a warren (the first time: --server URL --auth-key KEY, or without
an auth key by signing in at the URL it prints, when the server has
sign-in) and brings the node up; later runs change its preferences
(routes, exit node, DNS). Waits until the node has its network map.
--force-reauth signs in again (or uses the new --auth-key), keeping the
node's name and addresses.`,
		Example: "  warren up --server https://warren.example.com --auth-key file:/etc/warren/authkey\n  warren up --server https://warren.example.com --qr\n  warren up --exit-node auto",
		Args:    noArgs,
	}
	fs := c.Flags()
	o := &upOptions{}
	fs.StringVar(&o.sock, "socket", defaultSocket(), "the daemon's local API socket `PATH` (env "+envSocket+")")
	req := &o.req
	fs.StringVar(&req.ServerURL, "server", "", "coordination server `URL` (http://HOST:PORT or https://...), or several replicas' URLs separated by commas")
	fs.StringVar(&req.AuthKey, "auth-key", "", "pre-auth `KEY` to join with (or file:PATH)")
	fs.StringVar(&req.Hostname, "hostname", "", "`NAME` to register (default: the host name)")
	fs.StringVar(&req.ServerKey, "server-key", "", "pin this server public `KEY` instead of fetching it on first join")
	fs.BoolVar(&req.ForceReauth, "force-reauth", false, "join again even if already registered")
	fs.BoolVar(&o.asJSON, "json", false, "print the resulting status as JSON")
	fs.BoolVar(&o.qr, "qr", false, "also show the sign-in URL as a QR code (for a phone, on a headless machine)")
	fs.BoolVar(&o.acceptDNS, "accept-dns", false, "point this host's resolver at the node's MagicDNS (kept until --accept-dns=false)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the network map")
	fs.StringVar(&o.advRoutes, "advertise-routes", "", "offer to route these subnets for peers (`CIDR,...`; an admin approves them; \"\" withdraws)")
	fs.BoolVar(&o.advExit, "advertise-exit-node", false, "offer to be an exit node (0.0.0.0/0 and ::/0; an admin approves)")
	fs.BoolVar(&o.acceptRoutes, "accept-routes", false, "use the subnet routes peers offer")
	fs.StringVar(&o.exitNode, "exit-node", "", "send all traffic through this `PEER` (name or tunnel address), auto (the best online exit node, with failover), or \"\" for none; while none is usable, internet traffic is blocked")
	fs.BoolVar(&o.allowLAN, "exit-node-allow-lan", false, "with an exit node, keep the local networks reachable directly")
	fs.Uint16Var(&o.relayPort, "relay-server-port", 0, "offer to relay UDP for peers that cannot reach each other directly, on this `PORT` (reachable from them; an admin approves; 0 stops)")
	c.RunE = func(*cobra.Command, []string) error {
		return exit(runUp(fs, o, s.stdout, s.stderr))
	}
	return c
}

// upOptions are the flags of `warren up`.
type upOptions struct {
	sock                                       string
	req                                        localapi.UpRequest
	asJSON                                     bool
	timeout                                    time.Duration
	acceptDNS, advExit, acceptRoutes, allowLAN bool
	advRoutes, exitNode                        string
	qr                                         bool
	relayPort                                  uint16
}

func runUp(fs *pflag.FlagSet, o *upOptions, stdout, stderr io.Writer) int {
	req, asJSON, timeout := o.req, o.asJSON, o.timeout
	acceptDNS, advExit, acceptRoutes, allowLAN, exitNode := &o.acceptDNS, &o.advExit, &o.acceptRoutes, &o.allowLAN, &o.exitNode
	advRoutes, sock := &o.advRoutes, o.sock
	var rp localapi.RoutePrefs
	var rpSet, exitSet bool
	var routesErr error
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "accept-dns":
			req.AcceptDNS = acceptDNS
		case "advertise-routes":
			rs, err := parseRouteList(*advRoutes)
			routesErr = err
			rp.AdvertiseRoutes, rpSet = &rs, true
		case "advertise-exit-node":
			rp.AdvertiseExitNode, rpSet = advExit, true
		case "accept-routes":
			rp.AcceptRoutes, rpSet = acceptRoutes, true
		case "exit-node-allow-lan":
			rp.ExitNodeAllowLAN, rpSet = allowLAN, true
		case "exit-node":
			exitSet = true
		case "relay-server-port":
			rp.RelayServerPort, rpSet = &o.relayPort, true
		}
	})
	if routesErr != nil {
		fmt.Fprintf(stderr, "warren up: --advertise-routes: %v\n", routesErr)
		return 2
	}
	var err error
	if req.AuthKey, err = readAuthKey(req.AuthKey); err != nil {
		fmt.Fprintf(stderr, "warren up: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+signInWait+30*time.Second)
	defer cancel()
	lc := localapi.NewClient(sock)
	// Route preferences go first, so the node advertises its routes on
	// its first map stream; a named exit node is checked against the map,
	// so it is set once the node runs.
	namedExit := exitSet && *exitNode != "" && *exitNode != "auto"
	if exitSet && !namedExit {
		rp.ExitNode, rpSet = exitNode, true
	}
	if rpSet {
		if _, err := lc.SetRoutePrefs(ctx, rp); err != nil {
			fmt.Fprintf(stderr, "warren up: %v\n", err)
			return 1
		}
	}
	st, err := lc.Up(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "warren up: %v\n", err)
		return 1
	}
	reportPinnedKey(st, asJSON, stdout, stderr)
	if st.AuthURL != "" {
		if st, err = waitSignIn(ctx, lc, st, o.qr, stdout, stderr); err != nil { // signin.go
			fmt.Fprintf(stderr, "warren up: %v\n", err)
			return 1
		}
	}
	deadline := time.Now().Add(timeout)
	for st.BackendState != localapi.StateRunning {
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "warren up: registered, but no network map from %s after %v (state %s); the daemon keeps trying\n", st.ServerURL, timeout, st.BackendState)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
		if st, err = lc.Status(ctx); err != nil {
			fmt.Fprintf(stderr, "warren up: %v\n", err)
			return 1
		}
	}
	if namedExit {
		if _, err := lc.SetRoutePrefs(ctx, localapi.RoutePrefs{ExitNode: exitNode}); err != nil {
			fmt.Fprintf(stderr, "warren up: %v\n", err)
			return 1
		}
	}
	if asJSON {
		emitJSON(stdout, st)
		return 0
	}
	fmt.Fprintf(stdout, "warren is up: %s %s\n", st.Self.DNSName, joinAddrs(st.Self))
	return 0
}

// reportPinnedKey tells the user which server key an `up` pinned when it
// took the one the server sent (no --server-key), to compare with `warren
// server key` on the server, and warns when that came over plain http.
func reportPinnedKey(st *localapi.Status, asJSON bool, stdout, stderr io.Writer) {
	if st.ServerKeyFetched == "" {
		return
	}
	if !asJSON {
		fmt.Fprintf(stdout, "pinned server key %s (sent by %s; compare with `warren server key` on the server)\n", st.ServerKey, st.ServerURL)
	}
	if st.ServerKeyFetched == "http" {
		fmt.Fprintf(stderr, "warren up: warning: the server key %s came over plain http, where anyone on the path could have replaced it; check it, or join with --server-key KEY (from `warren server key`) or an https:// server\n", st.ServerKey)
	}
}

// parseRouteList parses --advertise-routes: CIDR prefixes separated by
// commas, without host bits; "" is none.
func parseRouteList(s string) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := routeprefix.Parse(f)
		if err != nil {
			return nil, err
		}
		if routeprefix.IsExit(p) {
			return nil, fmt.Errorf("%s: use --advertise-exit-node to offer default routes", p)
		}
		out = append(out, p)
	}
	return out, nil
}

func joinAddrs(p *localapi.PeerStatus) string {
	var s []string
	for _, a := range p.Addresses {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

func simpleVerb(s *streams, name, short string, call func(*localapi.Client, context.Context) error, done string) *cobra.Command {
	c := &cobra.Command{Use: name, Short: short, Args: noArgs}
	sock := socketFlag(c.Flags())
	c.RunE = func(*cobra.Command, []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := call(localapi.NewClient(*sock), ctx); err != nil {
			fmt.Fprintf(s.stderr, "warren %s: %v\n", name, err)
			return exitCode(1)
		}
		fmt.Fprintln(s.stdout, done)
		return nil
	}
	return c
}

func downCmd(s *streams) *cobra.Command {
	return simpleVerb(s, "down", "take this node off the mesh (it stays registered)", (*localapi.Client).Down, "warren is down")
}

func logoutCmd(s *streams) *cobra.Command {
	return simpleVerb(s, "logout", "take the node down and forget its registration and key", (*localapi.Client).Logout,
		"logged out: the next `warren up --auth-key` joins as a new node")
}

func ipCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "ip [flags] [PEER]",
		Short: "print this node's (or a peer's) tunnel addresses",
		Long:  "Prints this node's tunnel addresses, or those of PEER (a name, DNS name, tunnel address or key).",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("unexpected argument %q", args[1])
			}
			return nil
		},
	}
	fs := c.Flags()
	sock := socketFlag(fs)
	only4 := fs.BoolP("ipv4", "4", false, "IPv4 only")
	only6 := fs.BoolP("ipv6", "6", false, "IPv6 only")
	asJSON := fs.Bool("json", false, "print the addresses as a JSON list")
	c.RunE = func(_ *cobra.Command, args []string) error {
		return exit(runIP(*sock, args, *only4, *only6, *asJSON, s.stdout, s.stderr))
	}
	return c
}

func runIP(sock string, args []string, only4, only6, asJSON bool, stdout, stderr io.Writer) int {
	if only4 && only6 {
		fmt.Fprintln(stderr, "warren ip: -4 and -6 exclude each other")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := localapi.NewClient(sock).Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren ip: %v\n", err)
		return 1
	}
	p := st.Self
	if len(args) == 1 {
		p, err = findPeer(st, args[0])
		if err != nil {
			fmt.Fprintf(stderr, "warren ip: %v\n", err)
			return 1
		}
	}
	if p == nil || len(p.Addresses) == 0 {
		fmt.Fprintln(stderr, "warren ip: no addresses yet (is the node up? see `warren status`)")
		return 1
	}
	out := []string{}
	for _, a := range p.Addresses {
		if (only4 && !a.Is4()) || (only6 && !a.Is6()) {
			continue
		}
		out = append(out, a.String())
	}
	if asJSON {
		emitJSON(stdout, out)
		return 0
	}
	for _, a := range out {
		fmt.Fprintln(stdout, a)
	}
	return 0
}

// findPeer looks a peer up by name, DNS name, address or key.
func findPeer(st *localapi.Status, q string) (*localapi.PeerStatus, error) {
	ql := dnsname.Normalize(q)
	for i := range st.Peers {
		p := &st.Peers[i]
		if p.Name == ql || p.DNSName == ql || p.PublicKey == q {
			return p, nil
		}
		for _, a := range p.Addresses {
			if a.String() == ql {
				return p, nil
			}
		}
	}
	return nil, errors.New("no peer " + fmt.Sprintf("%q", q) + " (see `warren status`)")
}
