package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A node whose routes are approved forwards its peers' packets: it turns
// on IP forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding, in
// its own network namespace) and masquerades what comes in from the tunnel
// and leaves through another interface, so hosts on its LAN (or the
// internet, for an exit node) answer the router's address and need no
// route back to the tunnel.
//
// The nftables table "inet warren" belongs to the daemon: a forward chain
// marks packets arriving from the tunnel (bit fwdMark) and lets them go
// only to the approved routes, and into the tunnel only replies and flows
// from the approved subnets (setupNAT); a postrouting NAT chain
// masquerades marked packets that leave through any interface but the
// tunnel. It is created at once (in one transaction with its rules, which
// are replaced the same way when the approved routes change; one left by
// a crashed daemon is deleted at start), and deleted when the node stops
// routing, goes down or the daemon exits. The sysctls' previous values are written to the state
// directory before they are changed and restored (and the file removed)
// when forwarding stops, so a crash and restart still restores the
// values from before the first daemon.

const (
	nftTable = "warren"
	fwdMark  = 0x40000
)

var forwardSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

const forwardingFile = "forwarding.orig" // in the state directory

type forwarder struct {
	stateDir string
	tun      string
	on       bool
	routes   []netip.Prefix // what the nftables table was made for
	devices  []netip.Prefix // the addresses of the WireGuard-only members this node is the gateway of
}

// set makes the node forward for routes (its approved routes; none:
// forwarding off); idempotent.
func (f *forwarder) set(routes []netip.Prefix) error { return f.setAll(routes, f.devices) }

// setGateway makes the node forward between the tunnel and the tunnel for
// its WireGuard-only members' addresses (docs/WIREGUARD.md): their packets
// arrive from the tunnel and leave into it, with their own source address
// (no masquerade).
func (f *forwarder) setGateway(devices []netip.Prefix) error { return f.setAll(f.routes, devices) }

func (f *forwarder) setAll(routes, devices []netip.Prefix) error {
	on := len(routes) > 0 || len(devices) > 0
	if on == f.on && slices.Equal(routes, f.routes) && slices.Equal(devices, f.devices) {
		return nil
	}
	var err error
	if on {
		err = f.enable(routes, devices)
	} else {
		err = f.disable()
	}
	if err == nil {
		f.on, f.routes, f.devices = on, slices.Clone(routes), slices.Clone(devices)
	}
	return err
}

func (f *forwarder) enable(routes, devices []netip.Prefix) error {
	orig := filepath.Join(f.stateDir, forwardingFile)
	if _, err := os.Stat(orig); errors.Is(err, os.ErrNotExist) {
		old := map[string]string{}
		for _, p := range forwardSysctls {
			if b, err := os.ReadFile(p); err == nil {
				old[p] = strings.TrimSpace(string(b))
			}
		}
		b, _ := json.Marshal(old)
		if err := writeFileAtomic(orig, b, 0o600); err != nil {
			return fmt.Errorf("forwarding: save sysctls: %w", err)
		}
	}
	var errs []error
	for _, p := range forwardSysctls {
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("forwarding: %s: %w", p, err))
		}
	}
	if err := setupNAT(f.tun, routes, devices); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (f *forwarder) disable() error {
	errs := []error{deleteNAT()}
	errs = append(errs, restoreForwarding(f.stateDir))
	return errors.Join(errs...)
}

// restoreForwarding puts back the sysctls saved by enable, if any.
func restoreForwarding(stateDir string) error {
	orig := filepath.Join(stateDir, forwardingFile)
	b, err := os.ReadFile(orig)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var old map[string]string
	if err := json.Unmarshal(b, &old); err != nil {
		os.Remove(orig)
		return fmt.Errorf("forwarding: %s: %w", orig, err)
	}
	var errs []error
	for _, p := range forwardSysctls {
		if v, ok := old[p]; ok {
			if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("forwarding: restore %s: %w", p, err))
			}
		}
	}
	if len(errs) == 0 {
		os.Remove(orig)
	}
	return errors.Join(errs...)
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s+"\x00")
	return b
}

// setupNAT (re)creates the table inet warren for a node approved for
// routes. Its forward chain, in order:
//
//	iifname TUN oifname TUN counter drop          no hairpin between peers
//	iifname TUN meta mark set mark | fwdMark      (masqueraded on the way out)
//	iifname TUN daddr ROUTE accept                for each approved route
//	iifname TUN counter drop
//	oifname TUN ct state established,related accept
//	oifname TUN saddr SUBNET accept                for each approved route but the default ones
//	oifname TUN counter drop
//
// The destination check repeats the data-plane filter's (defence in
// depth). The last three rules are the reverse direction: from other
// interfaces into the tunnel pass the replies of flows peers started,
// and flows started by hosts of the approved subnets (whose addresses
// peers accept from this router); nobody else — a host on an exit node's
// side, another subnet — can start a flow into the tunnel, although a
// client takes any source address from its exit node.
func setupNAT(tun string, routes, devices []netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	// One transaction: the table is created or its rules replaced, never
	// missing in between.
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable})
	c.FlushTable(t)
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	mark := binaryutil.NativeEndian.PutUint32(fwdMark)
	iif := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
	}
	oif := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
	}
	rule := func(parts ...[]expr.Any) {
		r := &nftables.Rule{Table: t, Chain: fwd}
		for _, p := range parts {
			r.Exprs = append(r.Exprs, p...)
		}
		c.AddRule(r)
	}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	// A gateway's WireGuard-only members: from the tunnel into the tunnel.
	for _, d := range devices {
		rule(iif, oif, matchPrefix(d, true), accept)
		rule(iif, oif, matchPrefix(d, false), accept)
	}
	rule(iif, oif, drop)
	// iifname TUN meta mark set mark | fwdMark
	rule(iif, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(fwdMark)), Xor: mark},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	})
	for _, r := range routes {
		rule(iif, matchPrefix(r, false), accept)
	}
	rule(iif, drop)
	zero := make([]byte, 4)
	rule(oif, []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
	}, accept)
	for _, r := range routes {
		if r.Bits() > 0 {
			rule(oif, matchPrefix(r, true), accept)
		}
	}
	rule(oif, drop)
	// meta mark & fwdMark == fwdMark oifname != TUN masquerade
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark, Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(tun)},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: create table inet %s: %w", nftTable, err)
	}
	return nil
}

// matchPrefix matches packets of p's family whose source (src) or
// destination address lies in p.
func matchPrefix(p netip.Prefix, src bool) []expr.Any {
	p = p.Masked()
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if src {
		off = 12
	}
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 24
		if src {
			off = 8
		}
	}
	n := uint32(p.Addr().BitLen() / 8)
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if p.Bits() == 0 {
		return out
	}
	mask := net.CIDRMask(p.Bits(), int(n*8))
	return append(out,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	)
}

// deleteNAT removes the table inet warren, if present.
func deleteNAT() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == nftTable {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("nftables: delete table inet %s: %w", nftTable, err)
			}
		}
	}
	return nil
}
