package admin_test

import (
	"slices"
	"strconv"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestDNSResources(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/dns/zones", `{"name":"corp.example.com"}`) // records must lie in a zone
		var r admin.DNSRecord
		e.must(201, &r, "POST", "/api/v1/dns/records", `{"name":"DB.Corp.Example.com.","type":"a","value":"node:alpha"}`)
		if r.Name != "db.corp.example.com" || r.Type != "A" || r.TTL != netmap.DefaultTTL {
			t.Fatalf("record %+v", r)
		}
		e.must(201, nil, "POST", "/api/v1/dns/records", `{"name":"_sip._tcp.corp.example.com","type":"SRV","ttl":60,"value":"10 5 5060 alpha.warren.internal."}`)
		e.fails(400, "not an IPv4 address", "POST", "/api/v1/dns/records", `{"name":"x.corp.example.com","type":"A","value":"fd00::1"}`)
		e.fails(400, "record type", "POST", "/api/v1/dns/records", `{"name":"x.corp.example.com","type":"NS","value":"a.example.com"}`)
		e.fails(400, "not a lower-case DNS name", "POST", "/api/v1/dns/records", `{"name":"x","type":"A","value":"1.2.3.4"}`)
		e.fails(409, "CNAME cannot share", "POST", "/api/v1/dns/records", `{"name":"db.corp.example.com","type":"CNAME","value":"alpha.warren.internal"}`)
		e.fails(409, "already exists", "POST", "/api/v1/dns/records", `{"name":"db.corp.example.com","type":"A","value":"node:alpha"}`)
		var rs []admin.DNSRecord
		e.must(200, &rs, "GET", "/api/v1/dns/records", "")
		if len(rs) != 2 {
			t.Fatalf("records %+v", rs)
		}
		e.must(204, nil, "DELETE", "/api/v1/dns/records/"+itoa(r.ID), "")
		e.fails(404, "not found", "DELETE", "/api/v1/dns/records/"+itoa(r.ID), "")

		e.fails(409, "zone corp.example.com still holds 1 records (_sip._tcp.corp.example.com)", "DELETE", "/api/v1/dns/zones/corp.example.com", "")
		for _, rec := range rs {
			if rec.ID != r.ID {
				e.must(204, nil, "DELETE", "/api/v1/dns/records/"+itoa(rec.ID), "")
			}
		}
		e.must(204, nil, "DELETE", "/api/v1/dns/zones/corp.example.com", "")
		e.must(201, nil, "POST", "/api/v1/dns/zones", `{"name":"corp.example.com"}`)
		e.fails(409, "already exists", "POST", "/api/v1/dns/zones", `{"name":"Corp.example.com."}`)
		e.fails(400, "invalid", "POST", "/api/v1/dns/zones", `{"name":"-bad-"}`)
		var zs []admin.DNSZone
		e.must(200, &zs, "GET", "/api/v1/dns/zones", "")
		if len(zs) != 1 || zs[0].Name != "corp.example.com" {
			t.Fatalf("zones %+v", zs)
		}
		e.must(204, nil, "DELETE", "/api/v1/dns/zones/corp.example.com", "")

		var rt admin.DNSRoute
		e.must(201, &rt, "POST", "/api/v1/dns/routes", `{"domain":"lan.example.net","resolvers":["198.18.9.53","[fd00::53]:5353"]}`)
		if !slices.Equal(rt.Resolvers, []string{"198.18.9.53:53", "[fd00::53]:5353"}) {
			t.Fatalf("route %+v", rt)
		}
		e.fails(400, "not ADDRESS", "POST", "/api/v1/dns/routes", `{"domain":"lan.example.net","resolvers":["resolver.example"]}`)
		e.fails(400, "needs 1 to 8 resolvers", "POST", "/api/v1/dns/routes", `{"domain":"lan.example.net","resolvers":[]}`)
		e.must(204, nil, "DELETE", "/api/v1/dns/routes/lan.example.net", "")
	})
}

// TestDNSReachesNodes: a record added through the API is in every node's
// map at once, through notify (the whole DNS config travels in a delta).
func TestDNSReachesNodes(t *testing.T) {
	m := newMesh(t)
	a, b := m.join("a"), m.join("b")
	wait.For(t, pushWait, "mesh", func() bool { return len(peers(a)) == 1 && len(peers(b)) == 1 })
	m.must(201, nil, "POST", "/api/v1/dns/zones", `{"name":"corp.example.com"}`)
	m.must(201, nil, "POST", "/api/v1/dns/records", `{"name":"db.corp.example.com","type":"A","value":"node:a"}`)
	for _, n := range []*runningNode{a, b} {
		wait.For(t, pushWait, "record in map", func() bool {
			nm := n.c.NetworkMap()
			return nm != nil && len(nm.DNS.Records) == 1 && nm.DNS.Records[0].Value == "node:a" &&
				slices.Equal(nm.DNS.SearchDomains, []string{"warren.internal"})
		})
	}
	// A node joining later gets it in its full map.
	c := m.join("c")
	wait.For(t, pushWait, "record in c's full map", func() bool {
		nm := c.c.NetworkMap()
		return nm != nil && len(nm.DNS.Records) == 1
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
