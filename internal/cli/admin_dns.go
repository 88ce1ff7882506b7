package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// `warren admin dns records|zones|routes VERB`: the resource is two words,
// joined by runAdmin into "dns records" etc.

func adminDNSVerbs() []adminVerb {
	return []adminVerb{
		{"dns records", "add", "NAME TYPE VALUE", "add a custom record (A/AAAA: address or node:NAME; CNAME; TXT; SRV \"PRIO WEIGHT PORT TARGET\"; MX \"PREF HOST\")", 3,
			func(fs *pflag.FlagSet) func(*adminClient, []string) error {
				ttl := fs.Uint("ttl", 0, "time to live in `SECONDS` (default 300)")
				return func(c *adminClient, p []string) error {
					if *ttl > 7*24*3600 {
						return usageError("--ttl: at most 604800")
					}
					var r admin.DNSRecord
					req := admin.DNSRecordRequest{Name: p[0], Type: p[1], TTL: uint32(*ttl), Value: p[2]}
					return c.mutate("POST", "/dns/records", req, &r, func() string {
						return fmt.Sprintf("added record %s %s %s (id %d)", r.Name, r.Type, r.Value, r.ID)
					})
				}
			}},
		{"dns records", "list", "", "list custom records", 0, noFlags(func(c *adminClient, _ []string) error {
			var rs []admin.DNSRecord
			return c.list("/dns/records", &rs, func() { printDNSRecords(c.stdout, rs) })
		})},
		{"dns records", "delete", "ID", "delete a custom record", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/dns/records/"+url.PathEscape(p[0]), "record "+p[0])
		})},
		{"dns zones", "add", "ZONE", "answer a custom zone (e.g. corp.example.com) on every node", 1, noFlags(func(c *adminClient, p []string) error {
			var z admin.DNSZone
			return c.mutate("POST", "/dns/zones", admin.NameRequest{Name: p[0]}, &z, func() string { return "added zone " + z.Name })
		})},
		{"dns zones", "list", "", "list custom zones", 0, noFlags(func(c *adminClient, _ []string) error {
			var zs []admin.DNSZone
			return c.list("/dns/zones", &zs, func() {
				rows := make([][]string, len(zs))
				for i, z := range zs {
					rows[i] = []string{strconv.FormatInt(z.ID, 10), z.Name, when(&z.Created)}
				}
				table(c.stdout, "ID\tZONE\tCREATED", rows)
			})
		})},
		{"dns zones", "delete", "ZONE", "stop answering a custom zone", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/dns/zones/"+url.PathEscape(p[0]), "zone "+p[0])
		})},
		{"dns routes", "set", "DOMAIN RESOLVER[,RESOLVER...]", "send queries for DOMAIN to these resolvers (split DNS; ADDR or ADDR:PORT)", 2, noFlags(func(c *adminClient, p []string) error {
			var rt admin.DNSRoute
			req := admin.DNSRouteRequest{Domain: p[0], Resolvers: strings.Split(p[1], ",")}
			return c.mutate("POST", "/dns/routes", req, &rt, func() string {
				return fmt.Sprintf("queries for %s go to %s", rt.Domain, strings.Join(rt.Resolvers, ", "))
			})
		})},
		{"dns routes", "list", "", "list split-DNS routes", 0, noFlags(func(c *adminClient, _ []string) error {
			var rs []admin.DNSRoute
			return c.list("/dns/routes", &rs, func() {
				rows := make([][]string, len(rs))
				for i, r := range rs {
					rows[i] = []string{strconv.FormatInt(r.ID, 10), r.Domain, strings.Join(r.Resolvers, ",")}
				}
				table(c.stdout, "ID\tDOMAIN\tRESOLVERS", rows)
			})
		})},
		{"dns routes", "delete", "DOMAIN", "remove a split-DNS route", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/dns/routes/"+url.PathEscape(p[0]), "route "+p[0])
		})},
	}
}

func printDNSRecords(w io.Writer, rs []admin.DNSRecord) {
	rows := make([][]string, len(rs))
	for i, r := range rs {
		rows[i] = []string{strconv.FormatInt(r.ID, 10), r.Name, r.Type, strconv.FormatUint(uint64(r.TTL), 10), r.Value}
	}
	table(w, "ID\tNAME\tTYPE\tTTL\tVALUE", rows)
}
