package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// Environment defaults for `warren admin`.
const (
	envServer = "WARREN_SERVER"
	envAPIKey = "WARREN_API_KEY"
)

const defaultAdminServer = "http://localhost:8080"

// adminOpts are the global flags; every verb accepts them too, so they may
// come before or after RESOURCE VERB.
type adminOpts struct {
	server, key    string
	json, insecure bool
}

func (o *adminOpts) bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.server, "server", o.server, "server `URL` (default $"+envServer+", else "+defaultAdminServer+")")
	fs.StringVar(&o.key, "api-key", o.key, "admin API `KEY` wapi_... (default $"+envAPIKey+")")
	fs.BoolVar(&o.json, "json", o.json, "print JSON instead of a table or a message")
	fs.BoolVar(&o.insecure, "insecure", o.insecure, "send the API key over plain http to a remote (not loopback) server")
}

// adminVerb is one RESOURCE VERB. setup defines the verb's own flags and
// returns what runs it with the positional arguments.
type adminVerb struct {
	res, name, args, help string
	nargs                 int // -N: N or more
	setup                 func(fs *pflag.FlagSet) func(c *adminClient, pos []string) error
}

func adminVerbs() []adminVerb {
	verbs := []adminVerb{
		{"users", "create", "NAME", "create a user", 1, noFlags(func(c *adminClient, p []string) error {
			var u admin.User
			return c.mutate("POST", "/users", admin.NameRequest{Name: p[0]}, &u, func() string {
				return fmt.Sprintf("created user %s (id %d)", u.Name, u.ID)
			})
		})},
		{"users", "list", "", "list users", 0, noFlags(func(c *adminClient, _ []string) error {
			var us []admin.User
			return c.list("/users", &us, func() { printUsers(c.stdout, us) })
		})},
		{"users", "rename", "OLD NEW", "rename a user", 2, noFlags(func(c *adminClient, p []string) error {
			var u admin.User
			return c.mutate("PATCH", "/users/"+url.PathEscape(p[0]), admin.NameRequest{Name: p[1]}, &u, func() string {
				return fmt.Sprintf("renamed user %s to %s", p[0], u.Name)
			})
		})},
		{"users", "delete", "NAME", "delete a user (it must own no nodes; its auth keys go with it)", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/users/"+url.PathEscape(p[0]), "user "+p[0])
		})},

		{"authkeys", "create", "", "create a pre-auth key for --user; prints only the key (--json: the whole object)", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			var req admin.AuthKeyRequest
			fs.StringVar(&req.User, "user", "", "the `USER` whose nodes join with this key (required)")
			fs.BoolVar(&req.Reusable, "reusable", false, "the key can register any number of nodes (default: one)")
			fs.BoolVar(&req.Ephemeral, "ephemeral", false, "nodes joining with it are deleted when offline for a while")
			fs.StringVar(&req.Expiration, "expiration", "", "the key stops working after this long (`DURATION`, e.g. 1h, 30d; default never)")
			fs.Func("tags", "comma-separated `TAGS` (tag:db,tag:web) for the nodes joining with it; the policy's tagOwners must allow the user", func(v string) error {
				for _, t := range strings.Split(v, ",") {
					if t = strings.TrimSpace(t); t != "" {
						req.Tags = append(req.Tags, t)
					}
				}
				return nil
			})
			return func(c *adminClient, _ []string) error {
				if req.User == "" {
					return usageError("--user is required")
				}
				if req.Expiration != "" {
					if _, err := admin.ParseDuration(req.Expiration); err != nil {
						return usageError("--expiration: " + err.Error())
					}
				}
				var k admin.AuthKey
				return c.mutate("POST", "/authkeys", req, &k, func() string { return k.Key })
			}
		}},
		{"authkeys", "list", "", "list pre-auth keys (secrets are never shown again)", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			user := fs.String("user", "", "only this `USER`'s keys")
			return func(c *adminClient, _ []string) error {
				var ks []admin.AuthKey
				return c.list("/authkeys"+userQuery(*user), &ks, func() { printAuthKeys(c.stdout, ks) })
			}
		}},
		{"authkeys", "expire", "ID", "make a pre-auth key unusable from now on", 1, noFlags(func(c *adminClient, p []string) error {
			var k admin.AuthKey
			return c.mutate("POST", "/authkeys/"+url.PathEscape(p[0])+"/expire", nil, &k, func() string { return "expired auth key " + p[0] })
		})},
		{"authkeys", "delete", "ID", "delete a pre-auth key (nodes that joined with it stay)", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/authkeys/"+url.PathEscape(p[0]), "auth key "+p[0])
		})},

		{"nodes", "list", "", "list nodes", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			user := fs.String("user", "", "only this `USER`'s nodes")
			return func(c *adminClient, _ []string) error {
				var ns []admin.Node
				return c.list("/nodes"+userQuery(*user), &ns, func() { printNodes(c.stdout, ns) })
			}
		}},
		{"nodes", "delete", "ID|NAME", "delete a node; it is dropped from every map and its stream closed", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/nodes/"+url.PathEscape(p[0]), "node "+p[0])
		})},
		{"nodes", "expire", "ID|NAME", "expire a node's key now; it must register again", 1, noFlags(func(c *adminClient, p []string) error {
			var n admin.Node
			return c.mutate("POST", "/nodes/"+url.PathEscape(p[0])+"/expire", nil, &n, func() string {
				return fmt.Sprintf("expired node %s (id %d)", n.Name, n.ID)
			})
		})},
		{"nodes", "approve", "ID|NAME", "let a node that joined by signing in into the network (server option node_approval)", 1, noFlags(func(c *adminClient, p []string) error {
			var n admin.Node
			return c.mutate("POST", "/nodes/"+url.PathEscape(p[0])+"/approve", nil, &n, func() string {
				return fmt.Sprintf("approved node %s (id %d)", n.Name, n.ID)
			})
		})},
		{"nodes", "tag", "ID|NAME TAG[,TAG...]", "give a node these tags (each one its user may use per tagOwners); it is then owned by them, not its user", 2, noFlags(func(c *adminClient, p []string) error {
			var n admin.Node
			return c.mutate("PUT", "/nodes/"+url.PathEscape(p[0])+"/tags", admin.TagsRequest{Tags: strings.Split(p[1], ",")}, &n, func() string {
				return fmt.Sprintf("node %s (id %d) now has tags %s", n.Name, n.ID, strings.Join(n.Tags, ","))
			})
		})},
		{"nodes", "rename", "ID|NAME NEWNAME", "rename a node (a DNS label, unique in the deployment)", 2, noFlags(func(c *adminClient, p []string) error {
			var n admin.Node
			return c.mutate("PATCH", "/nodes/"+url.PathEscape(p[0]), admin.NameRequest{Name: p[1]}, &n, func() string {
				return fmt.Sprintf("renamed node %s to %s (id %d)", p[0], n.Name, n.ID)
			})
		})},

		{"apikeys", "create", "", "create an admin API key; prints only the key (--json: the whole object)", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			var req admin.APIKeyRequest
			fs.StringVar(&req.Expiration, "expiration", "", "the key stops working after this long (`DURATION`, e.g. 90d; default never)")
			fs.StringVar(&req.Scope, "scope", "admin", "`SCOPE`: admin (everything) or relay (read-only: lists node keys for 'warren relay --relay-key')")
			return func(c *adminClient, _ []string) error {
				if req.Scope != "admin" && req.Scope != "relay" {
					return usageError("--scope: want admin or relay")
				}
				if req.Expiration != "" {
					if _, err := admin.ParseDuration(req.Expiration); err != nil {
						return usageError("--expiration: " + err.Error())
					}
				}
				var k admin.APIKey
				return c.mutate("POST", "/apikeys", req, &k, func() string { return k.Key })
			}
		}},
		{"apikeys", "list", "", "list admin API keys (prefixes only)", 0, noFlags(func(c *adminClient, _ []string) error {
			var ks []admin.APIKey
			return c.list("/apikeys", &ks, func() { printAPIKeys(c.stdout, ks) })
		})},
		{"apikeys", "expire", "ID", "make an admin API key unusable from now on", 1, noFlags(func(c *adminClient, p []string) error {
			var k admin.APIKey
			return c.mutate("POST", "/apikeys/"+url.PathEscape(p[0])+"/expire", nil, &k, func() string { return "expired API key " + p[0] })
		})},
		{"apikeys", "delete", "ID", "delete an admin API key", 1, noFlags(func(c *adminClient, p []string) error {
			return c.remove("/apikeys/"+url.PathEscape(p[0]), "API key "+p[0])
		})},
	}
	verbs = append(verbs, adminDNSVerbs()...)
	verbs = append(verbs, adminRoutesVerbs()...)
	verbs = append(verbs, adminWireGuardVerbs()...)
	verbs = append(verbs, adminAuditVerbs()...)
	verbs = append(verbs, adminPeerRelayVerbs()...)
	return append(verbs, adminPolicyVerbs()...)
}

func noFlags(run func(c *adminClient, pos []string) error) func(*pflag.FlagSet) func(*adminClient, []string) error {
	return func(*pflag.FlagSet) func(*adminClient, []string) error { return run }
}

func userQuery(user string) string {
	if user == "" {
		return ""
	}
	return "?user=" + url.QueryEscape(user)
}

// usageError is bad input found before talking to the server (exit 2).
type usageError string

func (e usageError) Error() string { return string(e) }

// adminResources are the resources of `warren admin`, in help order.
var adminResources = []struct{ name, short string }{
	{"users", "manage users"},
	{"authkeys", "manage pre-auth keys (nodes join with them)"},
	{"nodes", "list, rename, tag, approve, expire and delete nodes; add WireGuard-only devices"},
	{"apikeys", "manage admin API keys"},
	{"routes", "approve the subnet routes and exit nodes nodes advertise"},
	{"policy", "get, check and set the access policy"},
	{"dns", "MagicDNS: custom records, zones and split-DNS routes"},
	{"dns records", "custom DNS records"},
	{"dns zones", "custom DNS zones every node answers"},
	{"dns routes", "split DNS: send a domain's queries to given resolvers"},
	{"audit", "the audit log of admin actions and sign-ins"},
}

func adminCmd(s *streams) *cobra.Command {
	o := &adminOpts{} // the environment applies after parsing, so --help never shows the key
	admin := groupOf("resource", "admin", "manage users, auth keys, nodes, API keys, routes, policy, DNS",
		fmt.Sprintf(`Talks to the server's admin API; --server and --api-key default to $%s
and $%s. The flags may come before or after RESOURCE VERB.`, envServer, envAPIKey))
	o.bind(admin.PersistentFlags())
	groups := map[string]*cobra.Command{"": admin}
	for _, r := range adminResources {
		parent, name := "", r.name
		if i := strings.LastIndexByte(r.name, ' '); i >= 0 {
			parent, name = r.name[:i], r.name[i+1:]
		}
		g := groupCmd(name, r.short, "")
		groups[parent].AddCommand(g)
		groups[r.name] = g
	}
	for _, v := range adminVerbs() {
		groups[v.res].AddCommand(adminVerbCmd(s, o, v))
	}
	return admin
}

// adminVerbCmd makes the command of one RESOURCE VERB.
func adminVerbCmd(s *streams, o *adminOpts, v adminVerb) *cobra.Command {
	c := &cobra.Command{
		Use:   strings.TrimSpace(v.name + " [flags] " + v.args),
		Short: v.help,
		Args: func(_ *cobra.Command, pos []string) error {
			if len(pos) != v.nargs && (v.nargs >= 0 || len(pos) < -v.nargs) { // nargs -N: at least N
				want := "no arguments"
				if v.nargs != 0 {
					want = v.args
				}
				return usagef("want %s, got %d argument(s)", want, len(pos))
			}
			if slices.Contains(pos, "") {
				return usagef("empty argument")
			}
			return nil
		},
	}
	run := v.setup(c.Flags())
	c.RunE = func(cmd *cobra.Command, pos []string) error {
		cl, err := newAdminClient(o, s.stdout)
		if err == nil {
			err = run(cl, pos)
		}
		var ue usageError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ue):
			return usageErr{adminOneLine(ue.Error())}
		}
		fmt.Fprintf(s.stderr, "%s: %s\n", cmd.CommandPath(), adminOneLine(err.Error()))
		return exitCode(1)
	}
	return c
}

func adminOneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// adminClient calls the admin API.
type adminClient struct {
	base   string // server URL + "/api/v1"
	key    string
	json   bool
	stdout io.Writer
	hc     *http.Client
}

func newAdminClient(o *adminOpts, stdout io.Writer) (*adminClient, error) {
	srv := strings.TrimSpace(o.server)
	if srv == "" {
		srv = strings.TrimSpace(os.Getenv(envServer))
	}
	if srv == "" {
		srv = defaultAdminServer
	}
	if !strings.Contains(srv, "://") {
		srv = "http://" + srv
	}
	u, err := url.Parse(srv)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError(fmt.Sprintf("--server %q is not an http(s) URL", o.server))
	}
	if err := checkKeyTransport(u, "--server", o.insecure); err != nil {
		return nil, usageError(err.Error())
	}
	key := strings.TrimSpace(o.key)
	if key == "" {
		key = strings.TrimSpace(os.Getenv(envAPIKey))
	}
	if key == "" {
		return nil, usageError(fmt.Sprintf("no API key (use --api-key or $%s; create one with 'warren server apikey create' on the server)", envAPIKey))
	}
	if !strings.HasPrefix(key, "wapi_") {
		return nil, usageError("--api-key does not look like an admin API key (wapi_...)")
	}
	return &adminClient{base: strings.TrimRight(u.String(), "/") + "/api/v1", key: key, json: o.json, stdout: stdout,
		hc: &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirects}}, nil
}

// do sends a request and decodes a 2xx answer into out; other answers
// become the server's one-line error.
func (c *adminClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if raw, ok := body.(rawBody); ok {
		rd = bytes.NewReader(raw)
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the server at %s: %v", strings.TrimSuffix(c.base, "/api/v1"), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the server's answer: %v", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb struct {
			Error    string   `json:"error"`
			Problems []string `json:"problems"` // a refused policy
		}
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			if len(eb.Problems) > 0 && !strings.Contains(eb.Error, eb.Problems[0]) {
				return errors.New(eb.Error + ":\n  " + strings.Join(eb.Problems, "\n  "))
			}
			return errors.New(eb.Error)
		}
		return fmt.Errorf("server answered %s (is %s a Warren server?)", resp.Status, strings.TrimSuffix(c.base, "/api/v1"))
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("unexpected answer from the server: %v", err)
		}
	}
	return nil
}

// list fetches a listing and prints it as JSON or with table.
func (c *adminClient) list(path string, out any, table func()) error {
	if err := c.do("GET", path, nil, out); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(out)
	}
	table()
	return nil
}

// mutate sends a change and prints the result as JSON or as msg().
func (c *adminClient) mutate(method, path string, body, out any, msg func() string) error {
	if err := c.do(method, path, body, out); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(out)
	}
	_, err := fmt.Fprintln(c.stdout, msg())
	return err
}

// remove deletes what and confirms.
func (c *adminClient) remove(path, what string) error {
	if err := c.do("DELETE", path, nil, nil); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(map[string]string{"deleted": what})
	}
	_, err := fmt.Fprintln(c.stdout, "deleted "+what)
	return err
}

func (c *adminClient) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
