package cli

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// `warren admin routes list|approve|unapprove`.
func adminRoutesVerbs() []adminVerb {
	change := func(verb string) func(c *adminClient, p []string) error {
		return func(c *adminClient, p []string) error {
			if _, err := admin.ParseRoutes(p[1:]); err != nil {
				return usageError(err.Error())
			}
			var out admin.NodeRoutes
			return c.mutate("POST", "/nodes/"+url.PathEscape(p[0])+"/routes/"+verb, admin.RoutesRequest{Routes: p[1:]}, &out, func() string {
				return fmt.Sprintf("%s: approved %s; enabled %s", out.Name, dashIfEmpty(strings.Join(out.Approved, ",")), dashIfEmpty(strings.Join(out.Enabled, ",")))
			})
		}
	}
	return []adminVerb{
		{"routes", "list", "", "list each node's advertised, approved and enabled routes (0.0.0.0/0 and ::/0: exit node)", 0, noFlags(func(c *adminClient, _ []string) error {
			var rs []admin.NodeRoutes
			return c.list("/routes", &rs, func() {
				rows := make([][]string, 0, len(rs))
				for _, r := range rs {
					rows = append(rows, []string{r.Name, dashIfEmpty(strings.Join(r.Advertised, ",")),
						dashIfEmpty(strings.Join(r.Approved, ",")), dashIfEmpty(strings.Join(r.Enabled, ","))})
				}
				table(c.stdout, "NODE\tADVERTISED\tAPPROVED\tENABLED", rows)
			})
		})},
		{"routes", "approve", "NODE CIDR...", "approve routes of a node (CIDR prefixes, or exit for 0.0.0.0/0 and ::/0); one not advertised yet is pre-approved", -2, noFlags(change("approve"))},
		{"routes", "unapprove", "NODE CIDR...", "withdraw the approval of routes of a node", -2, noFlags(change("unapprove"))},
	}
}
