package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/console"
)

// The users, auth keys and DNS forms, each checked in the store.
func TestListPageActions(t *testing.T) {
	e := newEnv(t, console.Options{})
	ctx := context.Background()
	b := e.browser()
	b.signIn(e.apiKey)
	tok := b.csrf("/admin/users")
	post := func(path string, form url.Values, wantFlash string) {
		t.Helper()
		form.Set("csrf", tok)
		resp, _ := b.do("POST", path, form, b.sameOrigin())
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if _, body := b.do("GET", loc, nil, nil); !strings.Contains(body, wantFlash) {
			t.Fatalf("%s: %q not shown:\n%s", path, wantFlash, body)
		}
	}
	post("/admin/users", url.Values{"name": {"carol"}}, "User carol created.")
	post("/admin/users/carol/rename", url.Values{"name": {"dave"}}, "User renamed to dave.")
	post("/admin/users/alice/delete", url.Values{}, "User alice deleted.")
	if _, err := e.st.GetUserByName(ctx, "dave"); err != nil {
		t.Fatalf("renamed user: %v", err)
	}
	post("/admin/users", url.Values{"name": {"dave"}}, "already exists")

	ks, err := e.st.ListPreAuthKeys(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := len(ks)
	resp, body := b.do("POST", "/admin/keys", url.Values{"csrf": {tok}, "user": {"dave"}, "ephemeral": {"1"}, "expiration": {"2d"}}, b.sameOrigin())
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, `id="secret">wkey_`) {
		t.Fatalf("create key: %d\n%s", resp.StatusCode, body)
	}
	ks, _ = e.st.ListPreAuthKeys(ctx, 0)
	k := ks[len(ks)-1]
	if len(ks) != before+1 || !k.Ephemeral || k.Reusable || k.Expiry.IsZero() {
		t.Fatalf("key: %+v", k)
	}
	post("/admin/keys/"+itoa(k.ID)+"/expire", url.Values{}, "expired.")
	post("/admin/keys/"+itoa(k.ID)+"/delete", url.Values{}, "deleted.")
	post("/admin/keys", url.Values{"user": {"dave"}, "expiration": {"soon"}}, "invalid duration")

	post("/admin/dns/zones", url.Values{"name": {"corp.example"}}, "Zone corp.example added.")
	post("/admin/dns/records", url.Values{"name": {"git.corp.example"}, "type": {"CNAME"}, "value": {"box.warren.internal"}, "ttl": {"60"}}, "Record git.corp.example added.")
	post("/admin/dns/records", url.Values{"name": {"x.elsewhere.example"}, "type": {"A"}, "value": {"100.64.0.1"}}, "outside the MagicDNS domain")
	post("/admin/dns/zones/corp.example/delete", url.Values{}, "still holds 1 records")
	post("/admin/dns/routes", url.Values{"domain": {"lan.example"}, "resolvers": {"192.0.2.53, 192.0.2.54:5353"}}, "Split-DNS route for lan.example set.")
	dns, err := e.st.DNSConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dns.Records) != 1 || len(dns.Zones) != 1 || len(dns.Routes) != 1 || len(dns.Routes[0].Resolvers) != 2 {
		t.Fatalf("DNS: %+v", dns)
	}
	recs, _ := e.st.ListDNSRecords(ctx)
	post("/admin/dns/records/"+itoa(recs[0].ID)+"/delete", url.Values{}, "Record deleted.")
	post("/admin/dns/zones/corp.example/delete", url.Values{}, "Zone corp.example deleted.")
	post("/admin/dns/routes/lan.example/delete", url.Values{}, "Split-DNS route for lan.example deleted.")
	if dns, _ = e.st.DNSConfig(ctx); len(dns.Records)+len(dns.Zones)+len(dns.Routes) != 0 {
		t.Fatalf("DNS after deletes: %+v", dns)
	}
}
