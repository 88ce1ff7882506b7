package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// A node whose routes are approved forwards its peers' packets: it turns
// on IP forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding, in
// its own network namespace) and masquerades what comes in from the tunnel
// and leaves through another interface, so hosts on its LAN (or the
// internet, for an exit node) answer the router's address and need no
// route back to the tunnel.
//
// The nftables table "inet warren" belongs to the daemon: a forward chain
// marks packets arriving from the tunnel (bit fwdMark), a postrouting NAT
// chain masquerades marked packets that leave through any interface but
// the tunnel. It is created at once (deleted first if a crashed daemon
// left one), and deleted when the node stops routing, goes down or the
// daemon exits. The sysctls' previous values are written to the state
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
}

// set turns forwarding and masquerading on or off; idempotent.
func (f *forwarder) set(on bool) error {
	if on == f.on {
		return nil
	}
	var err error
	if on {
		err = f.enable()
	} else {
		err = f.disable()
	}
	if err == nil {
		f.on = on
	}
	return err
}

func (f *forwarder) enable() error {
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
	if err := setupNAT(f.tun); err != nil {
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

// setupNAT (re)creates the table inet warren.
func setupNAT(tun string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable}
	c.DelTable(t)
	c.Flush() // no table yet: nothing to delete, the error does not matter
	t = c.AddTable(t)
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	mark := binaryutil.NativeEndian.PutUint32(fwdMark)
	// iifname TUN meta mark set mark | fwdMark
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(fwdMark)), Xor: mark},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
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
