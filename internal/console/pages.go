package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// Users.

func (c *Console) usersPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "Users", "users")
	var us []admin.User
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/users", nil, &us); err != nil {
		p.Error = err.Error()
	}
	p.Data = us
	c.render(w, http.StatusOK, "users", p)
}

func (c *Console) userCreate(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	err := c.call(r.Context(), http.MethodPost, "/api/v1/users", admin.NameRequest{Name: name}, nil)
	c.after(w, r, tok, Prefix+"users", "User "+name+" created.", err)
}

func (c *Console) userRename(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	err := c.call(r.Context(), http.MethodPatch, "/api/v1/users/"+url.PathEscape(r.PathValue("name")), admin.NameRequest{Name: name}, nil)
	c.after(w, r, tok, Prefix+"users", "User renamed to "+name+".", err)
}

func (c *Console) userDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	err := c.call(r.Context(), http.MethodDelete, "/api/v1/users/"+url.PathEscape(r.PathValue("name")), nil, nil)
	c.after(w, r, tok, Prefix+"users", "User "+r.PathValue("name")+" deleted.", err)
}

// Auth keys.

type keysData struct {
	Keys  []admin.AuthKey
	Users []admin.User
	New   *admin.AuthKey // the key just created, its secret shown once
}

func (c *Console) keysData(r *http.Request, p *page) keysData {
	var d keysData
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/authkeys", nil, &d.Keys); err != nil {
		p.Error = err.Error()
	}
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/users", nil, &d.Users); err != nil {
		p.Error = err.Error()
	}
	return d
}

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "Auth keys", "keys")
	p.Data = c.keysData(r, p)
	c.render(w, http.StatusOK, "keys", p)
}

// keyCreate creates a pre-auth key with the CLI's options and shows its
// secret in this response only (never in a URL, never again).
func (c *Console) keyCreate(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	req := admin.AuthKeyRequest{User: r.PostFormValue("user"), Reusable: r.PostFormValue("reusable") != "",
		Ephemeral: r.PostFormValue("ephemeral") != "", Expiration: strings.TrimSpace(r.PostFormValue("expiration")),
		Tags: splitList(r.PostFormValue("tags"))}
	var k admin.AuthKey
	if err := c.call(r.Context(), http.MethodPost, "/api/v1/authkeys", req, &k); err != nil {
		c.after(w, r, tok, Prefix+"keys", "", err)
		return
	}
	p := c.newPage(tok, ss, "Auth keys", "keys")
	d := c.keysData(r, p)
	d.New = &k
	p.Data = d
	c.render(w, http.StatusCreated, "keys", p)
}

func (c *Console) keyExpire(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	c.keyAction(w, r, tok, http.MethodPost, "/expire", "expired")
}

func (c *Console) keyDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	c.keyAction(w, r, tok, http.MethodDelete, "", "deleted")
}

func (c *Console) keyAction(w http.ResponseWriter, r *http.Request, tok, method, rest, what string) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil {
		err = c.call(r.Context(), method, fmt.Sprintf("/api/v1/authkeys/%d%s", id, rest), nil, nil)
	}
	c.after(w, r, tok, Prefix+"keys", fmt.Sprintf("Auth key %d %s.", id, what), err)
}

// DNS.

type dnsData struct {
	Records []admin.DNSRecord
	Zones   []admin.DNSZone
	Routes  []admin.DNSRoute
}

func (c *Console) dnsPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "DNS", "dns")
	var d dnsData
	for path, out := range map[string]any{"/api/v1/dns/records": &d.Records, "/api/v1/dns/zones": &d.Zones, "/api/v1/dns/routes": &d.Routes} {
		if err := c.call(r.Context(), http.MethodGet, path, nil, out); err != nil {
			p.Error = err.Error()
		}
	}
	p.Data = d
	c.render(w, http.StatusOK, "dns", p)
}

func (c *Console) dnsRecordAdd(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	req := admin.DNSRecordRequest{Name: r.PostFormValue("name"), Type: r.PostFormValue("type"), Value: r.PostFormValue("value")}
	var err error
	if s := strings.TrimSpace(r.PostFormValue("ttl")); s != "" {
		var ttl uint64
		if ttl, err = strconv.ParseUint(s, 10, 32); err != nil {
			err = fmt.Errorf("TTL %q is not a number of seconds", s)
		}
		req.TTL = uint32(ttl)
	}
	if err == nil {
		err = c.call(r.Context(), http.MethodPost, "/api/v1/dns/records", req, nil)
	}
	c.after(w, r, tok, Prefix+"dns", "Record "+req.Name+" added.", err)
}

func (c *Console) dnsRecordDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	err := c.call(r.Context(), http.MethodDelete, "/api/v1/dns/records/"+url.PathEscape(r.PathValue("id")), nil, nil)
	c.after(w, r, tok, Prefix+"dns", "Record deleted.", err)
}

func (c *Console) dnsZoneAdd(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	name := r.PostFormValue("name")
	err := c.call(r.Context(), http.MethodPost, "/api/v1/dns/zones", admin.NameRequest{Name: name}, nil)
	c.after(w, r, tok, Prefix+"dns", "Zone "+name+" added.", err)
}

func (c *Console) dnsZoneDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	err := c.call(r.Context(), http.MethodDelete, "/api/v1/dns/zones/"+url.PathEscape(r.PathValue("zone")), nil, nil)
	c.after(w, r, tok, Prefix+"dns", "Zone "+r.PathValue("zone")+" deleted.", err)
}

func (c *Console) dnsRouteAdd(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	req := admin.DNSRouteRequest{Domain: r.PostFormValue("domain"), Resolvers: splitList(r.PostFormValue("resolvers"))}
	err := c.call(r.Context(), http.MethodPost, "/api/v1/dns/routes", req, nil)
	c.after(w, r, tok, Prefix+"dns", "Split-DNS route for "+req.Domain+" set.", err)
}

func (c *Console) dnsRouteDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	err := c.call(r.Context(), http.MethodDelete, "/api/v1/dns/routes/"+url.PathEscape(r.PathValue("domain")), nil, nil)
	c.after(w, r, tok, Prefix+"dns", "Split-DNS route for "+r.PathValue("domain")+" deleted.", err)
}
