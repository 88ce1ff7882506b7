package mesh

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// netnsResolvConf gives ns its own /etc/resolv.conf: `ip netns exec`
// bind-mounts /etc/netns/NAME/resolv.conf over it for every process it
// starts there, so the host's file is never touched.
func netnsResolvConf(t *testing.T, ns *nettest.NS, content string) string {
	dir := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testResolver serves fixed A records on addr:port inside ns (a real DNS
// server on a real socket in the namespace); other names are REFUSED.
func testResolver(t *testing.T, ns *nettest.NS, addr string, port int, records map[string]string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf("%s:%d", addr, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if ip, ok := records[strings.ToLower(q.Name)]; ok {
			if q.Qtype == mdns.TypeA {
				rr, _ := mdns.NewRR(q.Name + " 30 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			}
		} else {
			m.Rcode = mdns.RcodeRefused
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// dig runs dig in the node's namespace and returns its answer section
// (+short) or, with status, the status line's rcode.
func (n *node) dig(args ...string) string {
	out, _ := n.ns.Output(append([]string{"dig", "+time=2", "+tries=1"}, args...)...)
	return strings.TrimSpace(out)
}

func (n *node) digStatus(args ...string) string {
	out := n.dig(append(args, "+noall", "+comments")...)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "status: "); i >= 0 {
			return strings.TrimSuffix(strings.Fields(l[i+8:])[0], ",")
		}
	}
	return out
}

// TestMagicDNS: every node answers DNS at 100.100.100.100 for node names,
// PTRs and the server's custom records and zones; split DNS and upstream
// forwarding use real resolvers in another namespace; with --accept-dns the
// host resolver (the namespace's resolv.conf) points at it, and goes back
// on down; records added on the server are answered within 2 s and follow
// node addresses; queries from outside the tunnel get nothing.
func TestMagicDNS(t *testing.T) {
	needDig(t)
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	resNS, resAddr := l.attach("mres")
	testResolver(t, resNS, resAddr, 53, map[string]string{"public.example.org.": "198.18.77.1"})
	testResolver(t, resNS, resAddr, 5353, map[string]string{"host.lan.example.net.": "198.18.77.2"})
	original := "nameserver " + resAddr + "\n"
	l.resolv = original

	l.mustAdmin("users", "create", "erin")
	key := l.mustAdmin("authkeys", "create", "--user", "erin", "--reusable")
	a, b := l.startNode("a"), l.startNode("b")
	if out, err := warren(a.ns, "up", "--socket", a.sock, "--server", l.srv.url, "--auth-key", key, "--hostname", "a", "--accept-dns"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := b.up(key); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, []*node{a, b}, 1, 10*time.Second)
	bV4, bV6 := b.ips()
	aV4, _ := a.ips()

	// The host resolver now points at MagicDNS, with the search domain.
	rc, _ := a.ns.Output("cat", "/etc/resolv.conf")
	if !strings.Contains(rc, "nameserver 100.100.100.100") || !strings.Contains(rc, "search warren.internal") {
		t.Fatalf("resolv.conf with --accept-dns:\n%s", rc)
	}
	checks := []struct{ what, got, want string }{
		{"peer A via resolv.conf", a.dig("+short", "b.warren.internal"), bV4},
		{"peer AAAA", a.dig("+short", "@100.100.100.100", "b.warren.internal", "AAAA"), bV6},
		{"self", a.dig("+short", "a.warren.internal"), aV4},
		{"short name via search domain", a.dig("+short", "+search", "b"), bV4},
		{"PTR", a.dig("+short", "-x", bV4), "b.warren.internal."},
		{"NXDOMAIN in the tailnet", a.digStatus("nosuch.warren.internal"), "NXDOMAIN"},
		{"NODATA for a node's MX", a.digStatus("b.warren.internal", "MX"), "NOERROR"},
		{"upstream forwarding", a.dig("+short", "public.example.org"), "198.18.77.1"},
		{"IPv6 service address", a.dig("+short", "@"+serviceV6(bV6), "b.warren.internal"), bV4},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}

	// Custom records and zones from the server, answered within 2 s.
	l.mustAdmin("dns", "zones", "add", "corp.example.com")
	l.mustAdmin("dns", "records", "add", "db.corp.example.com", "A", "node:b")
	l.mustAdmin("dns", "records", "add", "www.corp.example.com", "CNAME", "db.corp.example.com")
	l.mustAdmin("dns", "records", "add", "*.apps.corp.example.com", "A", "198.18.77.9")
	l.mustAdmin("dns", "records", "add", "_sql._tcp.corp.example.com", "SRV", "10 5 5432 db.corp.example.com")
	l.mustAdmin("dns", "records", "add", "corp.example.com", "TXT", "hello warren")
	l.mustAdmin("dns", "routes", "set", "lan.example.net", resAddr+":5353")
	added := time.Now()
	if !wait.Poll(2*time.Second, func() bool { return a.dig("+short", "db.corp.example.com") == bV4 }) {
		t.Fatalf("custom A not answered 2 s after it was added: %q", a.dig("db.corp.example.com"))
	}
	t.Logf("custom record answered %v after it was added", time.Since(added).Round(time.Millisecond))
	// The changes made after db's record (the other records, the route)
	// may reach the nodes in later deltas than the one that brought it:
	// each gets the rest of the 2 s.
	later := []struct {
		what string
		get  func() string
		want string
	}{
		{"CNAME chain to a node", func() string { return a.dig("+short", "www.corp.example.com") }, "db.corp.example.com.\n" + bV4},
		{"wildcard", func() string { return a.dig("+short", "x.apps.corp.example.com") }, "198.18.77.9"},
		{"SRV", func() string { return a.dig("+short", "_sql._tcp.corp.example.com", "SRV") }, "10 5 5432 db.corp.example.com."},
		{"TXT", func() string { return a.dig("+short", "corp.example.com", "TXT") }, `"hello warren"`},
		{"NXDOMAIN in a custom zone", func() string { return a.digStatus("nosuch.corp.example.com") }, "NXDOMAIN"},
		{"split DNS", func() string { return a.dig("+short", "host.lan.example.net") }, "198.18.77.2"},
		{"records on every node", func() string { return b.dig("+short", "@100.100.100.100", "db.corp.example.com") }, bV4},
	}
	for _, c := range later {
		got := c.get()
		for got != c.want && time.Since(added) < 2*time.Second {
			time.Sleep(20 * time.Millisecond)
			got = c.get()
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, got, c.want)
		}
	}

	// A record pointing at a node follows its address: b logs out, c takes
	// its freed address, and b joins again (a new node, a new address,
	// the same name).
	l.must(b.ns, "logout", "--socket", b.sock)
	c := l.startNode("c")
	if _, err := c.up(key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.up(key); err != nil {
		t.Fatal(err)
	}
	nV4, _ := b.ips()
	if nV4 == bV4 {
		t.Fatalf("b kept its address %s after logout and join", bV4)
	}
	if !wait.Poll(3*time.Second, func() bool { return a.dig("+short", "db.corp.example.com") == nV4 }) {
		t.Errorf("node:b record did not follow b to %s: %q", nV4, a.dig("+short", "db.corp.example.com"))
	}

	// Queries from outside the tunnel are not answered: the router (an
	// underlay neighbour) routes 100.100.100.100 to a and asks. The
	// resolver's sockets are bound to the tunnel device, so a's kernel
	// finds no socket for it (port unreachable). (A forged peer source:
	// TestMagicDNSSpoofedSource.)
	l.router.Run(t, "ip", "route", "add", "100.100.100.100/32", "via", a.under)
	if out, _ := l.router.Output("dig", "+time=1", "+tries=1", "+short", "@100.100.100.100", "b.warren.internal"); strings.Contains(out, nV4) ||
		!strings.Contains(out, "timed out") && !strings.Contains(out, "connection refused") {
		t.Errorf("query from the underlay: %q", out)
	}

	// down restores the host resolver.
	l.must(a.ns, "down", "--socket", a.sock)
	if rc, _ := a.ns.Output("cat", "/etc/resolv.conf"); rc != original {
		t.Errorf("resolv.conf after down:\n%s", rc)
	}
}

func serviceV6(nodeV6 string) string {
	// The tunnel prefix is a /48: its ::53.
	parts := strings.SplitN(nodeV6, ":", 4)
	return strings.Join(parts[:3], ":") + "::53"
}

func needDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatal("dig not installed (dnsutils)")
		}
		t.Skip("dig not installed (dnsutils)")
	}
}

// TestAcceptDNSSparesHostFile: a daemon in a namespace without its own
// resolv.conf refuses --accept-dns instead of rewriting the host's file.
func TestAcceptDNSSparesHostFile(t *testing.T) {
	before, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skip("no host resolv.conf")
	}
	// Should the safeguard ever fail, put the host's file back whatever
	// happens (registered first, so it runs after the daemons are gone).
	t.Cleanup(func() {
		if now, _ := os.ReadFile("/etc/resolv.conf"); string(now) != string(before) {
			os.WriteFile("/etc/resolv.conf", before, 0o644)
			t.Errorf("the host's resolv.conf was changed (restored):\n%s", now)
		}
	})
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "hostfile")
	key := l.mustAdmin("authkeys", "create", "--user", "hostfile")
	a := l.startNode("a")
	if _, err := warren(a.ns, "up", "--socket", a.sock, "--server", l.srv.url, "--auth-key", key, "--accept-dns"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "a health warning", func() bool {
		st, err := a.status()
		return err == nil && len(st.Health) > 0 && strings.Contains(st.Health[0], "refusing to rewrite")
	})
	if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(before) {
		t.Fatalf("the host's resolv.conf changed:\n%s", after)
	}
}
