package admin

import (
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/store"
)

// DNSRecord is a custom record as the API shows it.
type DNSRecord struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	TTL     uint32    `json:"ttl"`
	Value   string    `json:"value"`
	Created time.Time `json:"created"`
}

// DNSZone is a custom zone.
type DNSZone struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// DNSRoute is a split-DNS route.
type DNSRoute struct {
	ID        int64     `json:"id"`
	Domain    string    `json:"domain"`
	Resolvers []string  `json:"resolvers"`
	Created   time.Time `json:"created"`
}

// Request bodies of the DNS resources.
type (
	// DNSRecordRequest adds a record; TTL 0 means netmap.DefaultTTL. Name
	// is made lower case and loses a trailing dot.
	DNSRecordRequest struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		TTL   uint32 `json:"ttl"`
		Value string `json:"value"`
	}
	// DNSRouteRequest sets a split-DNS route; resolvers are ADDR[:PORT]
	// (port 53 by default).
	DNSRouteRequest struct {
		Domain    string   `json:"domain"`
		Resolvers []string `json:"resolvers"`
	}
)

func dnsRoutes(a *api) []route {
	return []route{
		{"GET /api/v1/dns/records", a.listDNSRecords},
		{"POST /api/v1/dns/records", a.addDNSRecord},
		{"DELETE /api/v1/dns/records/{id}", a.deleteDNSRecord},
		{"GET /api/v1/dns/zones", a.listDNSZones},
		{"POST /api/v1/dns/zones", a.addDNSZone},
		{"DELETE /api/v1/dns/zones/{zone}", a.deleteDNSZone},
		{"GET /api/v1/dns/routes", a.listDNSRoutes},
		{"POST /api/v1/dns/routes", a.setDNSRoute},
		{"DELETE /api/v1/dns/routes/{domain}", a.deleteDNSRoute},
	}
}

func (a *api) listDNSRecords(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	recs, err := a.st.ListDNSRecords(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := make([]DNSRecord, 0, len(recs))
	for _, rec := range recs {
		out = append(out, DNSRecord{ID: rec.ID, Name: rec.Record.Name, Type: rec.Record.Type, TTL: rec.Record.TTL,
			Value: rec.Record.Value, Created: rec.Created.UTC()})
	}
	return http.StatusOK, out, nil
}

func (a *api) addDNSRecord(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req DNSRecordRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	rec := netmap.DNSRecord{Name: dnsname.Normalize(req.Name), Type: strings.ToUpper(strings.TrimSpace(req.Type)), TTL: req.TTL, Value: strings.TrimSpace(req.Value)}
	if rec.TTL == 0 {
		rec.TTL = netmap.DefaultTTL
	}
	if rec.Type == "CNAME" || rec.Type == "MX" || rec.Type == "SRV" {
		rec.Value = strings.ToLower(strings.TrimSuffix(rec.Value, "."))
	}
	if err := rec.Validate(); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "%v", err)
	}
	zones, err := a.st.ListDNSZones(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if !a.answered(rec.Name, zones, "") {
		names := make([]string, 0, len(zones))
		for _, z := range zones {
			names = append(names, z.Name)
		}
		list := strings.Join(names, ", ")
		if list == "" {
			list = "none"
		}
		return 0, nil, errorf(http.StatusBadRequest, "%s is outside the MagicDNS domain %s and every custom zone (%s): nodes forward it upstream and would never answer the record; put it under one of them or add its zone first (dns zones add)",
			rec.Name, a.domain, list)
	}
	got, err := a.st.AddDNSRecord(r.Context(), store.DNSRecordData(rec))
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			msg := err.Error()
			if i := strings.Index(msg, store.ErrConflict.Error()+": "); i >= 0 {
				return 0, nil, errorf(http.StatusConflict, "%s", msg[i+len(store.ErrConflict.Error())+2:])
			}
			return 0, nil, errorf(http.StatusConflict, "record %s %s %s already exists", rec.Name, rec.Type, rec.Value)
		}
		return 0, nil, storeErr(err, "record "+rec.Name)
	}
	a.notify()
	return http.StatusCreated, DNSRecord{ID: got.ID, Name: rec.Name, Type: rec.Type, TTL: rec.TTL, Value: rec.Value, Created: got.Created.UTC()}, nil
}

func (a *api) deleteDNSRecord(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r, "id", "record")
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.DeleteDNSRecord(r.Context(), id); err != nil {
		return 0, nil, storeErr(err, "record "+strconv.FormatInt(id, 10))
	}
	a.notify()
	return http.StatusNoContent, nil, nil
}

func (a *api) listDNSZones(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	zs, err := a.st.ListDNSZones(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := make([]DNSZone, 0, len(zs))
	for _, z := range zs {
		out = append(out, DNSZone{ID: z.ID, Name: z.Name, Created: z.Created.UTC()})
	}
	return http.StatusOK, out, nil
}

func (a *api) addDNSZone(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req NameRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	z, err := a.st.AddDNSZone(r.Context(), req.Name)
	if err != nil {
		return 0, nil, storeErr(err, "zone "+strconv.Quote(dnsname.Normalize(req.Name)))
	}
	a.notify()
	return http.StatusCreated, DNSZone{ID: z.ID, Name: z.Name, Created: z.Created.UTC()}, nil
}

// inZone reports whether DNS name lies in zone (is it or below it).
func inZone(name, zone string) bool {
	return name == zone || strings.HasSuffix(name, "."+zone)
}

// answered reports whether nodes' resolvers answer name from the custom
// records: it lies in the MagicDNS domain or a custom zone other than
// except.
func (a *api) answered(name string, zones []*store.DNSZone, except string) bool {
	if inZone(name, a.domain) {
		return true
	}
	for _, z := range zones {
		if z.Name != except && inZone(name, z.Name) {
			return true
		}
	}
	return false
}

func (a *api) deleteDNSZone(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	name := dnsname.Normalize(r.PathValue("zone"))
	// A record only this zone covers would never be answered again.
	zones, err := a.st.ListDNSZones(r.Context())
	if err != nil {
		return 0, nil, err
	}
	recs, err := a.st.ListDNSRecords(r.Context())
	if err != nil {
		return 0, nil, err
	}
	var held []string // names
	n := 0
	for _, rec := range recs {
		if inZone(rec.Record.Name, name) && !a.answered(rec.Record.Name, zones, name) {
			if n++; !slices.Contains(held, rec.Record.Name) {
				held = append(held, rec.Record.Name)
			}
		}
	}
	if n > 0 {
		return 0, nil, errorf(http.StatusConflict, "zone %s still holds %d records (%s): delete them first", name, n, strings.Join(held, ", "))
	}
	if err := a.st.DeleteDNSZone(r.Context(), name); err != nil {
		return 0, nil, storeErr(err, "zone "+strconv.Quote(name))
	}
	a.notify()
	return http.StatusNoContent, nil, nil
}

func (a *api) listDNSRoutes(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	rs, err := a.st.ListDNSRoutes(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := make([]DNSRoute, 0, len(rs))
	for _, rt := range rs {
		out = append(out, toDNSRoute(rt))
	}
	return http.StatusOK, out, nil
}

func toDNSRoute(rt *store.DNSRoute) DNSRoute {
	res := make([]string, len(rt.Route.Resolvers))
	for i, a := range rt.Route.Resolvers {
		res[i] = a.String()
	}
	return DNSRoute{ID: rt.ID, Domain: rt.Route.Domain, Resolvers: res, Created: rt.Created.UTC()}
}

// parseResolver accepts ADDR, ADDR:PORT or [V6]:PORT.
func parseResolver(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, errorf(http.StatusBadRequest, "resolver %q is not ADDRESS or ADDRESS:PORT", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

func (a *api) setDNSRoute(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req DNSRouteRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	rt := netmap.DNSRoute{Domain: dnsname.Normalize(req.Domain)}
	for _, s := range req.Resolvers {
		ap, err := parseResolver(s)
		if err != nil {
			return 0, nil, err
		}
		rt.Resolvers = append(rt.Resolvers, ap)
	}
	if err := rt.Validate(); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "%v", err)
	}
	got, err := a.st.SetDNSRoute(r.Context(), store.DNSRouteData(rt))
	if err != nil {
		return 0, nil, storeErr(err, "route "+rt.Domain)
	}
	a.notify()
	return http.StatusCreated, toDNSRoute(got), nil
}

func (a *api) deleteDNSRoute(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	d := dnsname.Normalize(r.PathValue("domain"))
	if err := a.st.DeleteDNSRoute(r.Context(), d); err != nil {
		return 0, nil, storeErr(err, "route "+strconv.Quote(d))
	}
	a.notify()
	return http.StatusNoContent, nil, nil
}
