package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

func TestAuthRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		expiredKey, _, err := e.st.CreateAPIKey(ctx, time.Now().Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		wrongSecret := e.key[:len(e.key)-4] + "0000"
		if wrongSecret == e.key {
			wrongSecret = e.key[:len(e.key)-4] + "1111"
		}
		for _, tc := range []struct{ name, header string }{
			{"none", ""},
			{"not bearer", "Basic " + e.key},
			{"empty bearer", "Bearer "},
			{"malformed", "Bearer wapi_nope"},
			{"auth key kind", "Bearer wkey_" + e.key[5:]},
			{"wrong secret", "Bearer " + wrongSecret},
			{"expired", "Bearer " + expiredKey},
		} {
			for _, path := range []string{"/api/v1/users", "/api/v1/nope"} {
				req, _ := http.NewRequest("GET", e.hs.URL+path, nil)
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				resp, err := e.hs.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var b strings.Builder
				fmt.Fprint(&b, readAll(t, resp))
				if resp.StatusCode != 401 || strings.TrimSpace(b.String()) != `{
  "error": "invalid or expired API key"
}` {
					t.Errorf("%s %s: %d %s", tc.name, path, resp.StatusCode, b.String())
				}
			}
		}
		var users []admin.User
		e.must(200, &users, "GET", "/api/v1/users", "")
		if len(users) != 0 {
			t.Fatalf("users: %+v", users)
		}
	})
}

func TestUsers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		n0 := e.notified.Load()
		var u admin.User
		e.must(201, &u, "POST", "/api/v1/users", `{"name":"alice"}`)
		if u.Name != "alice" || u.ID == 0 || u.Created.IsZero() {
			t.Fatalf("created: %+v", u)
		}
		n0 = e.notifiedSince(n0, true, "create user")
		e.fails(409, `user "alice" already exists`, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.fails(400, "invalid", "POST", "/api/v1/users", `{"name":""}`)
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"bob"}`)
		var list []admin.User
		e.must(200, &list, "GET", "/api/v1/users", "")
		if len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
			t.Fatalf("list: %+v", list)
		}
		e.must(200, &u, "GET", "/api/v1/users/alice", "")
		n0 = e.notified.Load()
		e.must(200, &u, "PATCH", "/api/v1/users/alice", `{"name":"carol"}`)
		if u.Name != "carol" {
			t.Fatalf("renamed: %+v", u)
		}
		n0 = e.notifiedSince(n0, true, "rename user")
		e.fails(409, "already exists", "PATCH", "/api/v1/users/carol", `{"name":"bob"}`)
		e.fails(404, `user "alice" not found`, "PATCH", "/api/v1/users/alice", `{"name":"dave"}`)
		e.fails(404, `user "alice" not found`, "GET", "/api/v1/users/alice", "")

		e.addNode("carol", "laptop")
		e.fails(409, `user "carol" still owns nodes`, "DELETE", "/api/v1/users/carol", "")
		n0 = e.notified.Load()
		e.must(204, nil, "DELETE", "/api/v1/users/bob", "")
		e.notifiedSince(n0, true, "delete user")
		e.fails(404, `user "bob" not found`, "DELETE", "/api/v1/users/bob", "")
		// Names with spaces and slashes travel escaped in the path.
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"eve smith/x"}`)
		e.must(200, &u, "GET", "/api/v1/users/eve%20smith%2Fx", "")
		if u.Name != "eve smith/x" {
			t.Fatalf("escaped name: %+v", u)
		}
	})
}

func TestAuthKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"bob"}`)
		e.fails(400, "user is required", "POST", "/api/v1/authkeys", `{}`)
		e.fails(404, `user "nobody" not found`, "POST", "/api/v1/authkeys", `{"user":"nobody"}`)
		e.fails(400, "expiration: invalid duration", "POST", "/api/v1/authkeys", `{"user":"alice","expiration":"soon"}`)
		e.fails(400, "must be positive", "POST", "/api/v1/authkeys", `{"user":"alice","expiration":"-1h"}`)

		n0 := e.notified.Load()
		var k admin.AuthKey
		before := time.Now()
		e.must(201, &k, "POST", "/api/v1/authkeys", `{"user":"alice","reusable":true,"ephemeral":true,"expiration":"1h"}`)
		if !strings.HasPrefix(k.Key, "wkey_"+k.Prefix+"_") || k.User != "alice" || !k.Reusable || !k.Ephemeral || k.Expired ||
			k.Expiration == nil || k.Expiration.Before(before.Add(59*time.Minute)) || k.Expiration.After(time.Now().Add(time.Hour)) {
			t.Fatalf("created: %+v", k)
		}
		var k2 admin.AuthKey
		e.must(201, &k2, "POST", "/api/v1/authkeys", `{"user":"bob","expiration":"2d"}`)
		if k2.Reusable || k2.Ephemeral || k2.Expiration == nil || k2.Expiration.Sub(before) < 47*time.Hour {
			t.Fatalf("created: %+v", k2)
		}
		var k3 admin.AuthKey
		e.must(201, &k3, "POST", "/api/v1/authkeys", `{"user":"bob"}`)
		if k3.Expiration != nil {
			t.Fatalf("no expiration: %+v", k3)
		}
		_ = e.notified.Load() - n0 // creating keys changes no map; notify is optional

		var list []admin.AuthKey
		_, body := e.call("GET", "/api/v1/authkeys", "")
		if strings.Contains(body, k.Key) || strings.Contains(body, `"key"`) {
			t.Fatalf("listing shows a secret: %s", body)
		}
		e.must(200, &list, "GET", "/api/v1/authkeys", "")
		if len(list) != 3 || list[0].ID != k.ID || list[0].Prefix != k.Prefix || list[0].Key != "" {
			t.Fatalf("list: %+v", list)
		}
		e.must(200, &list, "GET", "/api/v1/authkeys?user=bob", "")
		if len(list) != 2 || list[0].User != "bob" || list[1].User != "bob" {
			t.Fatalf("list bob: %+v", list)
		}
		e.fails(404, `user "nobody" not found`, "GET", "/api/v1/authkeys?user=nobody", "")

		var exp admin.AuthKey
		e.must(200, &exp, "POST", fmt.Sprintf("/api/v1/authkeys/%d/expire", k.ID), "")
		if !exp.Expired || exp.Expiration == nil || exp.Expiration.After(time.Now()) || exp.Key != "" {
			t.Fatalf("expired: %+v", exp)
		}
		nk, err := noise.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.RegisterNode(context.Background(), k.Key, pubkey.Node{PublicKey: nk.PublicKey()}, "h", storeOpts()); !errors.Is(err, store.ErrAuthKeyExpired) {
			t.Fatal("expired key still registers")
		}
		e.must(204, nil, "DELETE", fmt.Sprintf("/api/v1/authkeys/%d", k.ID), "")
		e.fails(404, fmt.Sprintf("auth key %d not found", k.ID), "DELETE", fmt.Sprintf("/api/v1/authkeys/%d", k.ID), "")
		e.fails(404, "not found", "POST", fmt.Sprintf("/api/v1/authkeys/%d/expire", k.ID), "")
		e.fails(400, "not a positive integer", "DELETE", "/api/v1/authkeys/abc", "")
		e.fails(400, "not a positive integer", "POST", "/api/v1/authkeys/-1/expire", "")
	})
}

func TestNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"bob"}`)
		a := e.addNode("alice", "Laptop")
		b := e.addNode("bob", "server")
		c := e.addNode("bob", "server")

		var list []admin.Node
		e.must(200, &list, "GET", "/api/v1/nodes", "")
		if len(list) != 3 || list[0].ID != a.ID || list[0].Name != "laptop" || list[0].User != "alice" || list[0].Hostname != "Laptop" ||
			len(list[0].Addresses) != 2 || list[0].Addresses[0] != a.IPv4.String() || list[0].Addresses[1] != a.IPv6.String() ||
			len(list[0].Endpoints) != 1 || list[0].Online || list[0].Expired || list[0].Expiry != nil || list[0].Created.IsZero() ||
			list[2].Name != "server-1" {
			t.Fatalf("list: %+v", list)
		}
		e.must(200, &list, "GET", "/api/v1/nodes?user=bob", "")
		if len(list) != 2 || list[0].ID != b.ID || list[1].ID != c.ID {
			t.Fatalf("list bob: %+v", list)
		}
		e.fails(404, `user "zed" not found`, "GET", "/api/v1/nodes?user=zed", "")

		var n admin.Node
		e.must(200, &n, "GET", "/api/v1/nodes/server-1", "")
		if n.ID != c.ID || n.User != "bob" {
			t.Fatalf("by name: %+v", n)
		}
		e.must(200, &n, "GET", fmt.Sprintf("/api/v1/nodes/%d", a.ID), "")
		if n.Name != "laptop" {
			t.Fatalf("by id: %+v", n)
		}
		e.fails(404, `node "ghost" not found`, "GET", "/api/v1/nodes/ghost", "")
		e.fails(404, `node "999" not found`, "GET", "/api/v1/nodes/999", "")

		// Rename: DNS labels only, unique.
		n0 := e.notified.Load()
		for _, bad := range []string{"", "Big", "a_b", "-x", "x-", strings.Repeat("a", 64), "a.b"} {
			e.fails(400, "is not a DNS label", "PATCH", "/api/v1/nodes/laptop", fmt.Sprintf(`{"name":%q}`, bad))
		}
		e.fails(409, `node name "server" is already taken`, "PATCH", "/api/v1/nodes/laptop", `{"name":"server"}`)
		e.notifiedSince(n0, false, "failed renames")
		e.must(200, &n, "PATCH", "/api/v1/nodes/laptop", `{"name":"desk-1"}`)
		if n.Name != "desk-1" || n.ID != a.ID {
			t.Fatalf("renamed: %+v", n)
		}
		n0 = e.notifiedSince(n0, true, "rename node")
		e.must(200, &n, "PATCH", "/api/v1/nodes/desk-1", `{"name":"desk-1"}`) // to itself: fine

		// Expire now.
		e.must(200, &n, "POST", fmt.Sprintf("/api/v1/nodes/%d/expire", b.ID), "")
		if !n.Expired || n.Expiry == nil || n.Expiry.After(time.Now()) {
			t.Fatalf("expired: %+v", n)
		}
		n0 = e.notifiedSince(n0, true, "expire node")
		e.must(200, &list, "GET", "/api/v1/nodes?user=bob", "")
		if !list[0].Expired || list[1].Expired {
			t.Fatalf("after expire: %+v", list)
		}

		// Delete by name, then by ID.
		e.must(204, nil, "DELETE", "/api/v1/nodes/server", "")
		n0 = e.notifiedSince(n0, true, "delete node")
		e.must(204, nil, "DELETE", fmt.Sprintf("/api/v1/nodes/%d", c.ID), "")
		e.fails(404, "not found", "DELETE", "/api/v1/nodes/server", "")
		e.fails(404, "not found", "POST", "/api/v1/nodes/server/expire", "")
		e.must(200, &list, "GET", "/api/v1/nodes", "")
		if len(list) != 1 || list[0].ID != a.ID {
			t.Fatalf("after deletes: %+v", list)
		}
		e.must(204, nil, "DELETE", "/api/v1/users/bob", "")
	})
}

func TestAPIKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		var k admin.APIKey
		e.must(201, &k, "POST", "/api/v1/apikeys", `{"expiration":"30d"}`)
		if !strings.HasPrefix(k.Key, "wapi_"+k.Prefix+"_") || k.Expiration == nil || k.Expired {
			t.Fatalf("created: %+v", k)
		}
		e.fails(400, "invalid duration", "POST", "/api/v1/apikeys", `{"expiration":"1y"}`)
		var list []admin.APIKey
		_, body := e.call("GET", "/api/v1/apikeys", "")
		if strings.Contains(body, `"key"`) {
			t.Fatalf("listing shows a secret: %s", body)
		}
		e.must(200, &list, "GET", "/api/v1/apikeys", "")
		if len(list) != 2 || list[1].ID != k.ID || list[1].Prefix != k.Prefix || list[0].LastUsed == nil {
			t.Fatalf("list: %+v", list)
		}
		// The new key works until expired, then is refused like any bad key.
		if code, b := e.callKey(k.Key, "GET", "/api/v1/users", ""); code != 200 {
			t.Fatalf("new key: %d %s", code, b)
		}
		var exp admin.APIKey
		e.must(200, &exp, "POST", fmt.Sprintf("/api/v1/apikeys/%d/expire", k.ID), "")
		if !exp.Expired {
			t.Fatalf("expired: %+v", exp)
		}
		code, b := e.callKey(k.Key, "GET", "/api/v1/users", "")
		checkErr(t, code, b, 401, "invalid or expired API key")
		e.must(204, nil, "DELETE", fmt.Sprintf("/api/v1/apikeys/%d", k.ID), "")
		e.fails(404, fmt.Sprintf("API key %d not found", k.ID), "DELETE", fmt.Sprintf("/api/v1/apikeys/%d", k.ID), "")
		e.fails(404, "not found", "POST", fmt.Sprintf("/api/v1/apikeys/%d/expire", k.ID), "")
		var k2 admin.APIKey
		e.must(201, &k2, "POST", "/api/v1/apikeys", `{}`)
		if k2.Expiration != nil {
			t.Fatalf("no expiration: %+v", k2)
		}
	})
}

func TestBadRequests(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		n0 := e.notified.Load()
		e.fails(400, "invalid JSON body", "POST", "/api/v1/users", `{"name":`)
		e.fails(400, "invalid JSON body", "POST", "/api/v1/users", `["alice"]`)
		e.fails(400, `unknown field "nmae"`, "POST", "/api/v1/users", `{"nmae":"alice"}`)
		e.fails(400, "trailing data", "POST", "/api/v1/users", `{"name":"alice"} {"name":"bob"}`)
		e.fails(400, "empty request body", "POST", "/api/v1/users", ``)
		e.fails(400, `unknown field "admin"`, "POST", "/api/v1/authkeys", `{"user":"x","admin":true}`)
		e.fails(400, "invalid JSON body", "POST", "/api/v1/authkeys", `{"user":"x","reusable":"yes"}`)
		big := `{"name":"` + strings.Repeat("a", admin.MaxBody) + `"}`
		e.fails(413, "request body larger than 65536 bytes", "POST", "/api/v1/users", big)
		e.notifiedSince(n0, false, "refused requests")
		e.fails(404, "no such endpoint: GET /api/v1/widgets", "GET", "/api/v1/widgets", "")
		e.fails(405, "method PUT not allowed on /api/v1/users (allowed: GET, POST)", "PUT", "/api/v1/users", "")
		e.fails(405, "allowed: GET, PATCH, DELETE", "POST", "/api/v1/nodes/x", "")
		var users []admin.User
		e.must(200, &users, "GET", "/api/v1/users", "")
		if len(users) != 0 {
			t.Fatalf("a refused request created users: %+v", users)
		}
	})
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1h": time.Hour, "90m": 90 * time.Minute, "30d": 30 * 24 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := admin.ParseDuration(in); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "0", "-1h", "1y", "1.5d", "abc", "0d"} {
		if _, err := admin.ParseDuration(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
