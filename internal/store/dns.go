package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
)

// DNSRecordData is what a custom DNS record says. It has the fields of
// the control protocol's netmap.DNSRecord, which control/admin validates
// it as before storing and control/server converts it to; the store checks
// only the name (package dnsname), so it needs no protocol package.
type DNSRecordData struct {
	Name  string // lower case, no trailing dot; the first label may be "*"
	Type  string // A, AAAA, CNAME, TXT, SRV or MX
	TTL   uint32 // seconds
	Value string
}

// DNSRecord is a stored custom DNS record.
type DNSRecord struct {
	ID      int64
	Record  DNSRecordData
	Created time.Time
}

// DNSZone is a custom zone every node answers for.
type DNSZone struct {
	ID      int64
	Name    string
	Created time.Time
}

// DNSRouteData is a split-DNS route: the resolvers for a domain. It has
// the fields of netmap.DNSRoute; as for records, control/admin validates
// it and the store checks only the domain name.
type DNSRouteData struct {
	Domain    string
	Resolvers []netip.AddrPort
}

// DNSRoute is a stored split-DNS route.
type DNSRoute struct {
	ID      int64
	Route   DNSRouteData
	Created time.Time
}

// DNSConfig is the custom DNS data every node gets: records sorted by
// name, type and value, zones sorted, routes sorted by domain.
type DNSConfig struct {
	Records []DNSRecordData
	Zones   []string
	Routes  []DNSRouteData
}

// AddDNSRecord validates and stores a record. A CNAME may not share its name
// with any other record (and no record may be added beside a CNAME);
// ErrConflict for a duplicate.
func (s *Store) AddDNSRecord(ctx context.Context, r DNSRecordData) (*DNSRecord, error) {
	if !dnsname.IsRecordName(r.Name) {
		return nil, fmt.Errorf("add DNS record: %w: record name %q is not a lower-case DNS name with at least two labels", ErrInvalid, r.Name)
	}
	out := &DNSRecord{Record: r, Created: s.now()}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var cname, others int
		if err := tx.QueryRowContext(ctx, s.q("SELECT COUNT(CASE WHEN type = 'CNAME' THEN 1 END), COUNT(*) FROM dns_records WHERE name = ?"), r.Name).Scan(&cname, &others); err != nil {
			return err
		}
		if cname > 0 || (r.Type == "CNAME" && others > 0) {
			return fmt.Errorf("%w: %s already has records and a CNAME cannot share its name with other records", ErrConflict, r.Name)
		}
		return tx.QueryRowContext(ctx, s.q("INSERT INTO dns_records (name, type, ttl, value, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id"),
			r.Name, r.Type, int64(r.TTL), r.Value, out.Created.UnixNano()).Scan(&out.ID)
	})
	if err != nil {
		return nil, wrap("add DNS record", err)
	}
	return out, nil
}

// ListDNSRecords returns every record, sorted by name, type and value.
func (s *Store) ListDNSRecords(ctx context.Context) ([]*DNSRecord, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, name, type, ttl, value, created_at FROM dns_records ORDER BY name, type, value")
	if err != nil {
		return nil, wrap("list DNS records", err)
	}
	defer rows.Close()
	var out []*DNSRecord
	for rows.Next() {
		var r DNSRecord
		var ttl, created int64
		if err := rows.Scan(&r.ID, &r.Record.Name, &r.Record.Type, &ttl, &r.Record.Value, &created); err != nil {
			return nil, wrap("list DNS records", err)
		}
		r.Record.TTL, r.Created = uint32(ttl), time.Unix(0, created)
		out = append(out, &r)
	}
	return out, wrap("list DNS records", rows.Err())
}

// DeleteDNSRecord removes a record by ID.
func (s *Store) DeleteDNSRecord(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete DNS record", "DELETE FROM dns_records WHERE id = ?", id)
}

// AddDNSZone adds a custom zone.
func (s *Store) AddDNSZone(ctx context.Context, name string) (*DNSZone, error) {
	name = dnsname.Normalize(name)
	if !dnsname.IsDomain(name) {
		return nil, fmt.Errorf("add DNS zone: %w: %q is not a DNS name with at least two labels", ErrInvalid, name)
	}
	z := &DNSZone{Name: name, Created: s.now()}
	err := s.db.QueryRowContext(ctx, s.q("INSERT INTO dns_zones (name, created_at) VALUES (?, ?) RETURNING id"), name, z.Created.UnixNano()).Scan(&z.ID)
	if err != nil {
		return nil, wrap("add DNS zone", err)
	}
	return z, nil
}

// ListDNSZones returns the custom zones, sorted.
func (s *Store) ListDNSZones(ctx context.Context) ([]*DNSZone, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, name, created_at FROM dns_zones ORDER BY name")
	if err != nil {
		return nil, wrap("list DNS zones", err)
	}
	defer rows.Close()
	var out []*DNSZone
	for rows.Next() {
		var z DNSZone
		var created int64
		if err := rows.Scan(&z.ID, &z.Name, &created); err != nil {
			return nil, wrap("list DNS zones", err)
		}
		z.Created = time.Unix(0, created)
		out = append(out, &z)
	}
	return out, wrap("list DNS zones", rows.Err())
}

// DeleteDNSZone removes a zone by name.
func (s *Store) DeleteDNSZone(ctx context.Context, name string) error {
	return s.exec(ctx, "delete DNS zone", "DELETE FROM dns_zones WHERE name = ?", dnsname.Normalize(name))
}

// SetDNSRoute adds or replaces the split-DNS route for a domain.
func (s *Store) SetDNSRoute(ctx context.Context, rt DNSRouteData) (*DNSRoute, error) {
	rt.Domain = dnsname.Normalize(rt.Domain)
	if !dnsname.IsDomain(rt.Domain) {
		return nil, fmt.Errorf("set DNS route: %w: split-DNS domain %q is not a DNS name", ErrInvalid, rt.Domain)
	}
	res, err := json.Marshal(rt.Resolvers)
	if err != nil {
		return nil, err
	}
	out := &DNSRoute{Route: rt, Created: s.now()}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM dns_routes WHERE domain = ?"), rt.Domain); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.q("INSERT INTO dns_routes (domain, resolvers, created_at) VALUES (?, ?, ?) RETURNING id"),
			rt.Domain, string(res), out.Created.UnixNano()).Scan(&out.ID)
	})
	if err != nil {
		return nil, wrap("set DNS route", err)
	}
	return out, nil
}

// ListDNSRoutes returns the split-DNS routes, sorted by domain.
func (s *Store) ListDNSRoutes(ctx context.Context) ([]*DNSRoute, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, domain, resolvers, created_at FROM dns_routes ORDER BY domain")
	if err != nil {
		return nil, wrap("list DNS routes", err)
	}
	defer rows.Close()
	var out []*DNSRoute
	for rows.Next() {
		var r DNSRoute
		var res string
		var created int64
		if err := rows.Scan(&r.ID, &r.Route.Domain, &res, &created); err != nil {
			return nil, wrap("list DNS routes", err)
		}
		var rs []netip.AddrPort
		if err := json.Unmarshal([]byte(res), &rs); err != nil {
			return nil, fmt.Errorf("list DNS routes: route %s: %w", r.Route.Domain, err)
		}
		r.Route.Resolvers, r.Created = rs, time.Unix(0, created)
		out = append(out, &r)
	}
	return out, wrap("list DNS routes", rows.Err())
}

// DeleteDNSRoute removes the split-DNS route for a domain.
func (s *Store) DeleteDNSRoute(ctx context.Context, domain string) error {
	return s.exec(ctx, "delete DNS route", "DELETE FROM dns_routes WHERE domain = ?", dnsname.Normalize(domain))
}

// DNSConfig assembles the custom records, zones and routes every node gets.
func (s *Store) DNSConfig(ctx context.Context) (DNSConfig, error) {
	var c DNSConfig
	recs, err := s.ListDNSRecords(ctx)
	if err != nil {
		return c, err
	}
	for _, r := range recs {
		c.Records = append(c.Records, r.Record)
	}
	zones, err := s.ListDNSZones(ctx)
	if err != nil {
		return c, err
	}
	for _, z := range zones {
		c.Zones = append(c.Zones, z.Name)
	}
	routes, err := s.ListDNSRoutes(ctx)
	if err != nil {
		return c, err
	}
	for _, r := range routes {
		c.Routes = append(c.Routes, r.Route)
	}
	return c, nil
}
