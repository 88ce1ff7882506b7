package cli

import (
	"net/url"

	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// `warren admin audit list`.
func adminAuditVerbs() []adminVerb {
	return []adminVerb{
		{"audit", "list", "", "list the audit log: admin actions and sign-ins, who, what, when, from where (oldest first)", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			since := fs.String("since", "", "only the last `DURATION` (e.g. 90m, 24h, 7d; default everything)")
			return func(c *adminClient, _ []string) error {
				path := "/audit"
				if *since != "" {
					if _, err := admin.ParseDuration(*since); err != nil {
						return usageError("--since: " + err.Error())
					}
					path += "?since=" + url.QueryEscape(*since)
				}
				var es []admin.AuditEntry
				return c.list(path, &es, func() {
					rows := make([][]string, 0, len(es))
					for _, e := range es {
						result := "ok"
						if !e.OK {
							result = "refused"
						}
						rows = append(rows, []string{e.At.Format("2006-01-02T15:04:05Z"), e.Actor, e.Action, dashIfEmpty(e.Target),
							dashIfEmpty(e.Source), result, dashIfEmpty(e.Detail)})
					}
					table(c.stdout, "TIME\tACTOR\tACTION\tTARGET\tSOURCE\tRESULT\tDETAIL", rows)
				})
			}
		}},
	}
}
