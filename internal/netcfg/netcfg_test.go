package netcfg_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/netcfg"
	"github.com/warrenmesh/warren/internal/nettest"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSetReconciles(t *testing.T) {
	nettest.NeedNetns(t)
	ns := nettest.NewNS(t, "ncfg")
	ns.Run(t, "ip", "link", "add", "wtest0", "type", "veth", "peer", "name", "wtest1")
	ns.Run(t, "ip", "link", "set", "wtest1", "up")
	// A route and an address the manager did not install must survive.
	ns.Run(t, "ip", "addr", "add", "198.18.9.1/24", "dev", "wtest0")
	l := netcfg.New("wtest0")
	do := func(fn func() error) {
		t.Helper()
		if err := ns.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	do(func() error { return l.Up(1380) })
	do(func() error {
		return l.Set(pfx("100.64.0.1/32", "fd7a:1:2::1/128"),
			pfx("100.64.0.2/32", "100.64.0.3/32", "fd7a:1:2::2/128", "10.9.0.0/16", "100.64.0.1/32"))
	})
	addrs, _ := ns.Output("ip", "-o", "addr", "show", "dev", "wtest0")
	routes, _ := ns.Output("ip", "route", "show", "dev", "wtest0")
	routes6, _ := ns.Output("ip", "-6", "route", "show", "dev", "wtest0")
	link, _ := ns.Output("ip", "link", "show", "wtest0")
	for _, want := range []string{"100.64.0.1/32", "fd7a:1:2::1/128", "198.18.9.1/24"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("address %s missing:\n%s", want, addrs)
		}
	}
	for _, want := range []string{"100.64.0.2 ", "100.64.0.3 ", "10.9.0.0/16"} {
		if !strings.Contains(routes+" ", want) {
			t.Errorf("route %s missing:\n%s", want, routes)
		}
	}
	if !strings.Contains(routes6, "fd7a:1:2::2") {
		t.Errorf("IPv6 route missing:\n%s", routes6)
	}
	if !strings.Contains(link, "mtu 1380") || !strings.Contains(link, ",UP") {
		t.Errorf("link not up with MTU 1380:\n%s", link)
	}

	// A second Set removes what is no longer wanted, keeps the rest.
	do(func() error { return l.Set(pfx("100.64.0.1/32"), pfx("100.64.0.3/32")) })
	addrs, _ = ns.Output("ip", "-o", "addr", "show", "dev", "wtest0")
	routes, _ = ns.Output("ip", "route", "show", "dev", "wtest0")
	routes6, _ = ns.Output("ip", "-6", "route", "show", "dev", "wtest0")
	if strings.Contains(addrs, "fd7a:1:2::1") || !strings.Contains(addrs, "100.64.0.1/32") || !strings.Contains(addrs, "198.18.9.1/24") {
		t.Errorf("addresses after second Set:\n%s", addrs)
	}
	if strings.Contains(routes, "100.64.0.2 ") || strings.Contains(routes, "10.9.0.0/16") || !strings.Contains(routes, "100.64.0.3") {
		t.Errorf("routes after second Set:\n%s", routes)
	}
	if strings.Contains(routes6, "fd7a:1:2::2") {
		t.Errorf("IPv6 route left behind:\n%s", routes6)
	}

	do(l.Clear)
	addrs, _ = ns.Output("ip", "-o", "addr", "show", "dev", "wtest0")
	routes, _ = ns.Output("ip", "route", "show", "dev", "wtest0")
	if strings.Contains(addrs, "100.64.") || strings.Contains(routes, "100.64.") || !strings.Contains(addrs, "198.18.9.1/24") {
		t.Errorf("after Clear:\naddrs %s\nroutes %s", addrs, routes)
	}
}

func TestMissingInterface(t *testing.T) {
	nettest.NeedNetns(t)
	ns := nettest.NewNS(t, "ncfg")
	err := ns.Do(func() error { return netcfg.New("nosuch0").Set(pfx("100.64.0.1/32"), nil) })
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("err = %v, want one naming the interface", err)
	}
}
