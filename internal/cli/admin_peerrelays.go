package cli

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// `warren admin nodes approve-relay|unapprove-relay NODE` and
// `warren admin nodes relays`.
func adminPeerRelayVerbs() []adminVerb {
	change := func(verb string) func(c *adminClient, p []string) error {
		return func(c *adminClient, p []string) error {
			var out admin.NodeRelay
			return c.mutate("POST", "/nodes/"+url.PathEscape(p[0])+"/relay/"+verb, nil, &out, func() string {
				return fmt.Sprintf("%s: peer relay %s", out.Name, relayState(out))
			})
		}
	}
	return []adminVerb{
		{"nodes", "relays", "", "list the nodes offering to be peer relays (warren up --relay-server-port) and their approval", 0, noFlags(func(c *adminClient, _ []string) error {
			var rs []admin.NodeRelay
			return c.list("/peer-relays", &rs, func() {
				rows := make([][]string, 0, len(rs))
				for _, r := range rs {
					port := "-"
					if r.Port != 0 {
						port = strconv.Itoa(int(r.Port))
					}
					rows = append(rows, []string{r.Name, port, relayState(r)})
				}
				table(c.stdout, "NODE\tPORT\tSTATE", rows)
			})
		})},
		{"nodes", "approve-relay", "NODE", "approve a node as a peer relay (UDP, for peers the policy's peerRelays rules allow); one not offering a port yet is pre-approved", 1, noFlags(change("approve"))},
		{"nodes", "unapprove-relay", "NODE", "withdraw a node's approval as a peer relay", 1, noFlags(change("unapprove"))},
	}
}

func relayState(r admin.NodeRelay) string {
	switch {
	case r.Serving:
		return "serving on UDP port " + strconv.Itoa(int(r.Port))
	case r.Approved:
		return "approved (no port offered)"
	}
	return "not approved"
}
