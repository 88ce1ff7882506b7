package admin_test

import "testing"

// TestDNSRecordOutsideZones: a record is answered only by nodes' own
// resolvers, which answer the MagicDNS domain and the custom zones and
// forward every other name upstream; a record outside all of them would
// never be answered, so it is refused in one line naming the zones it
// could go in. A zone that still holds records cannot be deleted either.
func TestDNSRecordOutsideZones(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.fails(400, "stray.example.org is outside the MagicDNS domain warren.internal and every custom zone (none)", "POST", "/api/v1/dns/records",
			`{"name":"stray.example.org","type":"A","value":"198.18.0.9"}`)
		e.must(201, nil, "POST", "/api/v1/dns/zones", `{"name":"corp.example.com"}`)
		e.fails(400, "stray.example.org is outside the MagicDNS domain warren.internal and every custom zone (corp.example.com)", "POST", "/api/v1/dns/records",
			`{"name":"stray.example.org","type":"A","value":"198.18.0.9"}`)
		// A suffix that is not a whole label does not count.
		e.fails(400, "outside", "POST", "/api/v1/dns/records", `{"name":"evilcorp.example.com","type":"A","value":"198.18.0.9"}`)
		for _, name := range []string{"db.warren.internal", "corp.example.com", "db.corp.example.com", "*.apps.corp.example.com"} {
			e.must(201, nil, "POST", "/api/v1/dns/records", `{"name":"`+name+`","type":"TXT","value":"here"}`)
		}
		e.fails(409, "zone corp.example.com still holds 3 records", "DELETE", "/api/v1/dns/zones/corp.example.com", "")
	})
}
