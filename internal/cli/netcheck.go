package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/localapi"
)

func netcheckCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "netcheck [flags]", Short: "check UDP, public addresses, NAT type and relay latency", Args: noArgs}
	sock := socketFlag(c.Flags())
	asJSON := c.Flags().Bool("json", false, "print the report as JSON")
	c.RunE = func(*cobra.Command, []string) error { return exit(runNetcheck(*sock, *asJSON, s.stdout, s.stderr)) }
	return c
}

func runNetcheck(sock string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := localapi.NewClient(sock).Netcheck(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren netcheck: %v\n", err)
		return 1
	}
	if asJSON {
		emitJSON(stdout, rep)
		return 0
	}
	fmt.Fprintln(stdout, "Report:")
	fmt.Fprintf(stdout, "  * UDP: %v\n", rep.UDP)
	if rep.PublicIPv4.IsValid() {
		fmt.Fprintf(stdout, "  * IPv4: yes, %s\n", rep.PublicIPv4)
	} else {
		fmt.Fprintln(stdout, "  * IPv4: no")
	}
	if rep.PublicIPv6.IsValid() {
		fmt.Fprintf(stdout, "  * IPv6: yes, %s\n", rep.PublicIPv6)
	} else {
		fmt.Fprintln(stdout, "  * IPv6: no")
	}
	nat := map[string]string{"yes": " (hard NAT: peers behind another NAT go through a relay)",
		"no": " (easy NAT: direct paths work)", "unknown": " (needs two STUN servers)"}[rep.MappingVaries]
	fmt.Fprintf(stdout, "  * Mapping varies by destination: %s%s\n", rep.MappingVaries, nat)
	if pm := rep.PortMap; pm != nil {
		fmt.Fprintf(stdout, "  * Port mapping: %s\n", portMapLine(pm))
	}
	fmt.Fprintln(stdout, "  * Relay regions:")
	for _, r := range rep.Regions {
		line := fmt.Sprintf("    - %s (%d): ", r.Code, r.ID)
		if r.RelayError != "" {
			line += "relay unreachable: " + r.RelayError
		} else {
			line += "relay " + fmtRTT(r.RelayLatency)
		}
		switch {
		case r.STUNError != "":
			line += ", STUN failed: " + r.STUNError
		case r.STUNLatency > 0:
			line += ", STUN " + fmtRTT(r.STUNLatency)
		}
		fmt.Fprintln(stdout, line)
	}
	if len(rep.Peers) > 0 {
		fmt.Fprintln(stdout, "  * Paths to peers:")
		for _, p := range rep.Peers {
			line := fmt.Sprintf("    - %s: %s", printable(p.Name), printable(p.Path))
			if p.PathReason != "" {
				line += " (" + printable(p.PathReason) + ")"
			}
			fmt.Fprintln(stdout, line)
		}
	}
	return 0
}

// portMapLine says which protocols the gateway answered and the mapping.
func portMapLine(pm *localapi.NetcheckPortMap) string {
	if pm.Disabled {
		return "off (--no-portmap)"
	}
	if pm.Error != "" {
		return pm.Error
	}
	var ans []string
	for _, p := range []struct {
		name string
		ok   bool
	}{{"PCP", pm.PCP}, {"NAT-PMP", pm.NATPMP}, {"UPnP", pm.UPnP}} {
		if p.ok {
			ans = append(ans, p.name)
		}
	}
	line := "gateway " + pm.Gateway.String() + " answered "
	if len(ans) == 0 {
		line += "none"
	} else {
		line += strings.Join(ans, ", ")
	}
	if pm.Mapped.IsValid() {
		line += fmt.Sprintf("; mapped %s (%s)", pm.Mapped, pm.Protocol)
	}
	return line
}
