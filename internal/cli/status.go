package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/localapi"
)

func statusCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "status [flags]", Short: "show this node and its peers", Args: noArgs}
	sock := socketFlag(c.Flags())
	asJSON := c.Flags().Bool("json", false, "print the full status as JSON")
	c.RunE = func(*cobra.Command, []string) error { return exit(runStatus(*sock, *asJSON, s.stdout, s.stderr)) }
	return c
}

func runStatus(sock string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := localapi.NewClient(sock).Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren status: %v\n", err)
		return 1
	}
	if asJSON {
		emitJSON(stdout, st)
		return 0
	}
	writeStatus(stdout, st, time.Now())
	if st.BackendState == localapi.StateRunning {
		if rs, err := localapi.NewClient(sock).Routes(ctx); err == nil {
			writeRoutes(stdout, rs)
		}
	}
	return 0
}

// writeRoutes adds the routes part of status: this node's own routes and
// exit node, and the peers that offer routes.
func writeRoutes(w io.Writer, rs *localapi.RouteStatus) {
	if len(rs.Routes) > 0 {
		fmt.Fprintf(w, "# routing for peers: %s\n", joinPrefixes(rs.Routes))
	} else if len(rs.AdvertiseRoutes) > 0 || rs.AdvertiseExitNode {
		fmt.Fprintln(w, "# advertised routes are waiting for an admin's approval (warren admin routes approve)")
	}
	switch {
	case rs.CurrentExitNode != "":
		how := ""
		if rs.ExitNode == "auto" {
			how = " (auto)"
		}
		fmt.Fprintf(w, "# exit node: %s %s%s\n", rs.CurrentExitNode, rs.CurrentExitNodeIP, how)
	case rs.ExitNode != "":
		fmt.Fprintf(w, "# exit node: none available (asked for %s): internet traffic blocked\n", rs.ExitNode)
	}
	if len(rs.Peers) == 0 {
		return
	}
	fmt.Fprintln(w, "# routes offered by peers:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range rs.Peers {
		var what []string
		var subnets []netip.Prefix
		for _, r := range p.Routes {
			if r.Bits() > 0 {
				subnets = append(subnets, r)
			}
		}
		if len(subnets) > 0 {
			s := "subnets " + joinPrefixes(subnets)
			if !rs.AcceptRoutes {
				s += " (not accepted: --accept-routes)"
			}
			what = append(what, s)
		}
		if p.ExitNode {
			s := "exit node"
			if p.InUse {
				s += " (in use)"
			}
			what = append(what, s)
		}
		state := "offline"
		if p.Online {
			state = "online"
		}
		fmt.Fprintf(tw, "#   %s\t%s\t%s\n", printable(p.Name), state, strings.Join(what, "; "))
	}
	tw.Flush()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ExpiryWarning is how long before its key expires `warren status` warns.
const ExpiryWarning = 7 * 24 * time.Hour

func writeStatus(w io.Writer, st *localapi.Status, now time.Time) {
	switch st.BackendState {
	case localapi.StateNeedsLogin:
		if st.AuthURL != "" {
			fmt.Fprintf(w, "Waiting for a sign-in: to add this machine, sign in at %s\n", printable(st.AuthURL))
			break
		}
		fmt.Fprintln(w, "Logged out: run `warren up --server URL --auth-key KEY` (or without --auth-key, to sign in) to join.")
	case localapi.StateStopped:
		fmt.Fprintln(w, "Warren is stopped: run `warren up` to bring it back.")
	case localapi.StateStarting:
		fmt.Fprintf(w, "Starting: waiting for the network map from %s\n", st.ServerURL)
	}
	for _, h := range st.Health {
		fmt.Fprintf(w, "# health: %s\n", printable(h))
	}
	if st.BackendState != localapi.StateRunning || st.Self == nil {
		return
	}
	if !st.Connected {
		fmt.Fprintf(w, "# not connected to %s: running on the last network map\n", st.ServerURL)
	}
	if e := st.Self.Expiry; !e.IsZero() && e.Sub(now) < ExpiryWarning {
		if e.After(now) {
			fmt.Fprintf(w, "# warning: this node's key expires in %s (%s); run `warren up --force-reauth` to sign in again\n",
				e.Sub(now).Round(time.Minute), e.Local().Format("2006-01-02 15:04"))
		} else {
			fmt.Fprintln(w, "# warning: this node's key has expired; run `warren up --force-reauth` to sign in again")
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	addr := func(p *localapi.PeerStatus, v6 bool) string {
		for _, a := range p.Addresses {
			if a.Is6() == v6 {
				return a.String()
			}
		}
		return "-"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", addr(st.Self, false), addr(st.Self, true), printable(st.Self.Name), printable(st.Self.User), "self", fmt.Sprintf("port %d", st.ListenPort))
	for i := range st.Peers {
		p := &st.Peers[i]
		state := "offline"
		if p.Online {
			state = "online"
		}
		var detail []string
		switch p.Path {
		case "direct":
			detail = append(detail, fmt.Sprintf("direct %s (rtt %s, jitter %s)", p.PathAddr, fmtRTT(p.PathRTT), fmtRTT(p.PathJitter)))
		case "relay":
			detail = append(detail, "relay "+printable(p.PathRelay))
		case "peer-relay":
			detail = append(detail, "peer relay "+printable(p.PathRelay))
		case "guess":
			detail = append(detail, "trying "+p.PathAddr)
		case "wireguard":
			detail = append(detail, "wireguard "+p.PathAddr)
		}
		if p.Via != "" {
			detail = append(detail, "via "+printable(p.Via))
		}
		if p.PathReason != "" && len(detail) > 0 {
			detail[len(detail)-1] += " (not direct: " + printable(p.PathReason) + ")"
		}
		if !p.LastHandshake.IsZero() {
			detail = append(detail, "handshake "+ago(now.Sub(p.LastHandshake)))
		}
		switch {
		case !p.TrafficReportedAt.IsZero():
			// A WireGuard-only member of another gateway: its traffic as
			// the gateway reported it.
			gw := "its gateway"
			if p.Via != "" {
				gw = "gateway " + printable(p.Via)
			}
			detail = append(detail, "rx "+bytesIEC(p.RxBytes)+" tx "+bytesIEC(p.TxBytes)+" as reported by "+gw+" "+ago(now.Sub(p.TrafficReportedAt)))
		case p.RxBytes+p.TxBytes > 0:
			detail = append(detail, "rx "+bytesIEC(p.RxBytes)+" tx "+bytesIEC(p.TxBytes))
		}
		if !p.Expiry.IsZero() && p.Expiry.Before(now) {
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", addr(p, false), addr(p, true), printable(p.Name), printable(p.User), state, strings.Join(detail, ", "))
	}
	tw.Flush()
}

func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
}

func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return itoa(n) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func pingCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "ping [flags] PEER",
		Short: "ping a peer over the tunnel, one line per probe",
		Long: `Pings PEER (a name, DNS name or tunnel address) over the tunnel with the
daemon's own probes, one line per probe saying which path (direct or
relay) the reply came over.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("exactly one peer expected (a name, DNS name or tunnel address)")
			}
			return nil
		},
	}
	fs := c.Flags()
	sock := socketFlag(fs)
	var req localapi.PingRequest
	asJSON := fs.Bool("json", false, "print one JSON object per probe")
	fs.IntVarP(&req.Count, "count", "c", 4, "send `N` probes (with --until-direct: at most N, default 30)")
	untilDirect := fs.Bool("until-direct", false, "stop at the first reply over a direct path; fail if none comes")
	fs.DurationVar(&req.Interval, "interval", time.Second, "time between probes")
	fs.DurationVar(&req.Timeout, "timeout", 2*time.Second, "how long to wait for each reply")
	c.RunE = func(_ *cobra.Command, args []string) error {
		req.Peer = args[0]
		return exit(runPing(*sock, req, fs.Changed("count"), *asJSON, *untilDirect, s.stdout, s.stderr))
	}
	return c
}

func runPing(sock string, req localapi.PingRequest, countSet, asJSON, untilDirect bool, stdout, stderr io.Writer) int {
	if req.Count <= 0 {
		fmt.Fprintln(stderr, "warren ping: -c must be at least 1")
		return 2
	}
	if untilDirect && !countSet {
		req.Count = 30
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pctx, direct := context.WithCancel(ctx)
	defer direct()
	var rtts []time.Duration
	sent, wentDirect := 0, false
	err := localapi.NewClient(sock).Ping(pctx, req, func(r localapi.PingResult) {
		if wentDirect {
			return
		}
		sent++
		if asJSON {
			printJSONLine(stdout, r)
		} else if r.Err != "" {
			fmt.Fprintf(stdout, "no reply from %s (%s) seq=%d: %s\n", r.Peer, r.IP, r.Seq, r.Err)
		} else {
			via := ""
			if r.Endpoint != "" {
				via = " via " + r.Endpoint // "direct ADDR" or "relay REGION"
			}
			fmt.Fprintf(stdout, "pong from %s (%s)%s seq=%d in %s\n", r.Peer, r.IP, via, r.Seq, fmtRTT(r.RTT))
		}
		if r.Err == "" {
			rtts = append(rtts, r.RTT)
			if untilDirect && strings.HasPrefix(r.Endpoint, "direct ") {
				wentDirect = true
				direct()
			}
		}
	})
	if err != nil && pctx.Err() == nil {
		fmt.Fprintf(stderr, "warren ping: %v\n", err)
		return 1
	}
	if !asJSON && sent > 0 {
		fmt.Fprintf(stdout, "--- %s: %d sent, %d received, %.0f%% loss", req.Peer, sent, len(rtts), 100*float64(sent-len(rtts))/float64(sent))
		if len(rtts) > 0 {
			mn, mx, sum := rtts[0], rtts[0], time.Duration(0)
			for _, r := range rtts {
				mn, mx, sum = min(mn, r), max(mx, r), sum+r
			}
			avg := sum / time.Duration(len(rtts))
			var v float64
			for _, r := range rtts {
				v += math.Pow(float64(r-avg), 2)
			}
			sd := time.Duration(math.Sqrt(v / float64(len(rtts))))
			fmt.Fprintf(stdout, "; rtt min/avg/max/stddev %s/%s/%s/%s", fmtRTT(mn), fmtRTT(avg), fmtRTT(mx), fmtRTT(sd))
		}
		fmt.Fprintln(stdout)
	}
	if len(rtts) == 0 {
		return 1
	}
	if untilDirect && !wentDirect {
		if !asJSON {
			fmt.Fprintf(stdout, "%s: no direct path after %d probes\n", req.Peer, sent)
		}
		return 1
	}
	return 0
}

func printJSONLine(w io.Writer, v any) {
	json.NewEncoder(w).Encode(v)
}

func fmtRTT(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}
