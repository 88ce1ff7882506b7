package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/uapi"
)

var _ localapi.Backend = (*Daemon)(nil)

// checkServerURL refuses URLs that cannot name a coordination server; s
// may list several replicas' URLs separated by commas (docs/HA.md).
func checkServerURL(s string) error {
	for one := range strings.SplitSeq(s, ",") {
		u, err := url.Parse(one)
		if err != nil {
			return fmt.Errorf("--server %q: %v", one, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--server %q: want http://HOST[:PORT] or https://HOST[:PORT], or several separated by commas", one)
		}
	}
	return nil
}

// firstServerURL is the first of a comma-separated list of server URLs
// (where the server key is fetched from on first join; every replica has
// the same key).
func firstServerURL(s string) string {
	first, _, _ := strings.Cut(s, ",")
	return first
}

// Up joins the node (when given an auth key, or when it is not registered)
// and brings it onto the mesh.
func (d *Daemon) Up(ctx context.Context, req localapi.UpRequest) (*localapi.Status, error) {
	end, err := d.beginOp(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	d.mu.Lock()
	if req.AcceptDNS != nil && *req.AcceptDNS != d.prefs.AcceptDNS {
		d.prefs.AcceptDNS = *req.AcceptDNS
		if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
			d.mu.Unlock()
			return nil, err
		}
		if d.nm != nil {
			d.applyDNSLocked(d.nm)
		}
	}
	p := d.prefs
	d.mu.Unlock()

	if req.ServerURL != "" {
		req.ServerURL = strings.ReplaceAll(strings.TrimRight(req.ServerURL, "/"), "/,", ",")
		if err := checkServerURL(req.ServerURL); err != nil {
			return nil, err
		}
	}
	if req.Hostname != "" && len(req.Hostname) > 255 {
		return nil, errors.New("--hostname: longer than 255 bytes")
	}
	d.cancelLogin() // a new up replaces a sign-in in progress (interactive.go)
	relogin := false
	if req.ForceReauth && p.Registered && (req.ServerURL == "" || req.ServerURL == p.ServerURL) {
		// With an auth key, register a new key with it (the server
		// checks the auth key's rules and takes its tags); without, sign
		// in again (a re-login, also of an expired node, keeps name and
		// addresses), or, if the server has no sign-in, just rotate the
		// key (interactive.go).
		if req.AuthKey != "" {
			if err := d.rotateKey(ctx); err != nil {
				return nil, err
			}
		}
		relogin = req.AuthKey == ""
	}
	join := req.AuthKey != "" || !p.Registered || relogin
	if !join {
		if req.ServerURL != "" && req.ServerURL != p.ServerURL {
			return nil, fmt.Errorf("this node is registered with %s; to move it to %s pass --auth-key (and --force-reauth)", p.ServerURL, req.ServerURL)
		}
		return d.bringUp()
	}

	serverURL := req.ServerURL
	if serverURL == "" {
		serverURL = p.ServerURL
	}
	if serverURL == "" && !p.Registered {
		return nil, errors.New("this node is not registered: pass --server URL (with --auth-key KEY, or without to sign in)")
	} else if serverURL == "" {
		return nil, errors.New("no coordination server: pass --server URL")
	}
	var serverKey pubkey.Server
	fetchedOver := "" // the scheme, when the key is the one the server sent
	switch {
	case req.ServerKey != "":
		k, err := noise.ParsePublicKey(req.ServerKey)
		if err != nil || k.IsZero() || k.IsLowOrder() {
			return nil, fmt.Errorf("--server-key %q is not a valid public key", req.ServerKey)
		}
		if p.ServerKey != "" && serverURL == p.ServerURL && p.ServerKey != k.String() && !req.ForceReauth {
			return nil, fmt.Errorf("--server-key differs from the key pinned for %s; pass --force-reauth to replace it", serverURL)
		}
		serverKey = pubkey.Server{PublicKey: k}
	case p.ServerKey != "" && serverURL == p.ServerURL:
		k, err := noise.ParsePublicKey(p.ServerKey)
		if err != nil {
			return nil, fmt.Errorf("pinned server key: %w", err)
		}
		serverKey = pubkey.Server{PublicKey: k}
	default:
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		k, err := noiseconn.FetchKey(fctx, firstServerURL(serverURL))
		cancel()
		if err != nil {
			return nil, err
		}
		serverKey = pubkey.Server{PublicKey: k}
		if u, err := url.Parse(firstServerURL(serverURL)); err == nil {
			fetchedOver = u.Scheme
		}
	}

	cc, err := client.New(client.Config{ServerURL: serverURL, ServerKey: serverKey, NodeKey: d.key, Logger: d.log})
	if err != nil {
		return nil, err
	}
	hostname := req.Hostname
	if hostname == "" {
		hostname = p.Hostname
	}
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	j := joinTarget{serverURL: serverURL, serverKey: serverKey, fetchedOver: fetchedOver, hostname: req.Hostname}
	if req.AuthKey == "" {
		return d.joinInteractive(ctx, cc, j, hostname, relogin) // interactive.go
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := cc.Register(rctx, req.AuthKey, hostname, d.endpoints())
	cancel()
	if err != nil {
		var re *client.RegisterError
		if errors.As(err, &re) {
			return nil, errors.New(re.Message)
		}
		return nil, fmt.Errorf("join %s: %w", serverURL, err)
	}
	return d.completeJoin(j, node)
}

// joinTarget is where a registration goes: the server, its key (and how it was
// learned), the hostname preference given.
type joinTarget struct {
	serverURL   string
	serverKey   pubkey.Server
	fetchedOver string
	hostname    string
}

// completeJoin records a registration the server accepted and starts the
// node on it.
func (d *Daemon) completeJoin(j joinTarget, node *netmap.Node) (*localapi.Status, error) {
	serverURL, serverKey, fetchedOver := j.serverURL, j.serverKey, j.fetchedOver
	d.log.Info("registered", "server", serverURL, "name", node.Name, "addresses", fmt.Sprint(node.Addresses))
	if fetchedOver != "" {
		d.log.Info("pinned the server key it sent", "server", serverURL, "key", serverKey.String(), "over", fetchedOver)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.prefs.ServerURL != serverURL || d.prefs.ServerKey != serverKey.String() {
		// Another server: its map replaces the old one.
		d.stopControlLocked()
		d.clearMapLocked()
		os.Remove(d.mapPath())
	}
	old := d.prefs
	d.prefs = prefs{ServerURL: serverURL, ServerKey: serverKey.String(), Hostname: j.hostname,
		Registered: true, WantRunning: true, AcceptDNS: old.AcceptDNS,
		AdvertiseRoutes: old.AdvertiseRoutes, AdvertiseExitNode: old.AdvertiseExitNode, AcceptRoutes: old.AcceptRoutes,
		ExitNode: old.ExitNode, ExitNodeAllowLAN: old.ExitNodeAllowLAN, RelayServerPort: old.RelayServerPort}
	if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
		return nil, err
	}
	d.health = nil // a new registration: the old problems are gone
	if err := d.startControlLocked(); err != nil {
		return nil, err
	}
	st := d.statusLocked()
	st.ServerKeyFetched = fetchedOver
	return st, nil
}

// bringUp puts a registered node on the mesh (and keeps it there across
// restarts).
func (d *Daemon) bringUp() (*localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prefs.WantRunning = true
	if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
		return nil, err
	}
	if err := d.startControlLocked(); err != nil {
		return nil, err
	}
	return d.statusLocked(), nil
}

// Down takes the node off the mesh but keeps its registration.
func (d *Daemon) Down(ctx context.Context) error {
	end, err := d.beginOp(ctx)
	if err != nil {
		return err
	}
	defer end()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.prefs.Registered {
		return errors.New("this node is not registered; nothing to take down")
	}
	d.prefs.WantRunning = false
	if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
		return err
	}
	d.stopControlLocked()
	d.clearMapLocked()
	d.state = localapi.StateStopped
	return nil
}

// Logout takes the node down, forgets its registration and key (the next
// `up` joins as a new node), then asks the server to delete it, with the
// old key, holding no lock meanwhile. If the server cannot be reached the
// node stays forgotten locally all the same, and status says the server
// still lists it.
func (d *Daemon) Logout(ctx context.Context) error {
	end, err := d.beginOp(ctx)
	if err != nil {
		return err
	}
	defer end()
	d.cancelLogin() // a sign-in in progress would register the forgotten key
	d.mu.Lock()
	var cc *client.Client // the old key's, to tell the server
	serverURL := d.prefs.ServerURL
	if d.prefs.Registered {
		d.stopControlLocked()
		cc, _ = d.controlClient(d.key)
	}
	d.clearMapLocked()
	os.Remove(d.mapPath())
	err = d.forgetLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if cc == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	serverErr := cc.Logout(lctx)
	cancel()
	var re *client.RegisterError
	if serverErr == nil || errors.As(serverErr, &re) && re.Code == proto.CodeNotRegistered {
		return nil
	}
	d.log.Warn("logout: server not told", "err", serverErr)
	d.mu.Lock()
	// The op slot kept every other up, down and logout out meanwhile.
	d.setHealthLocked(healthLogout, fmt.Sprintf("logged out locally, but %s could not be told (%v): an admin may delete the node there", serverURL, serverErr))
	d.mu.Unlock()
	return nil
}

// forgetLocked gives the node a new key and forgets its registration;
// d.mu held.
func (d *Daemon) forgetLocked() error {
	key, err := newKey(d.cfg.StateDir)
	if err != nil {
		return err
	}
	d.key = key
	d.eng.SetNodeKey(pubkey.Node{PublicKey: key.PublicKey()})
	d.prefs.Registered, d.prefs.WantRunning = false, false
	if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
		return err
	}
	if err := d.eng.Apply(&uapi.Config{PrivateKey: &key}); err != nil {
		return fmt.Errorf("install new key: %w", err)
	}
	d.state = localapi.StateNeedsLogin
	d.health = nil // off the mesh: none of the old problems holds
	return nil
}

// beginOp takes the lifecycle slot: up, down and logout (key rotation is
// part of up) run one at a time, since they may wait on the server for
// seconds without holding d.mu. It waits for the one running, or for ctx;
// the function it returns frees the slot. Status, maps and route
// preferences never wait on it.
func (d *Daemon) beginOp(ctx context.Context) (end func(), err error) {
	for {
		d.mu.Lock()
		if d.op == nil {
			ch := make(chan struct{})
			d.op = ch
			d.mu.Unlock()
			return func() {
				d.mu.Lock()
				d.op = nil
				d.mu.Unlock()
				close(ch)
			}, nil
		}
		ch := d.op
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// controlClient returns a control client for the pinned server with key.
func (d *Daemon) controlClient(key noise.PrivateKey) (*client.Client, error) {
	sk, err := noise.ParsePublicKey(d.prefs.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("pinned server key: %w", err)
	}
	return client.New(client.Config{ServerURL: d.prefs.ServerURL, ServerKey: pubkey.Server{PublicKey: sk}, NodeKey: key,
		DiscoKey: d.eng.DiscoPublic(),
		MapPath:  d.mapPath(), Logger: d.log,
		Control: d.router.SocketControl, Routes: d.advertisedLocked(), RelayPort: d.prefs.RelayServerPort,
		MinBackoff: d.backoff / 10, MaxBackoff: d.backoff, Clock: d.clk,
		OS: runtime.GOOS, Version: d.cfg.Version})
}

// rotateKey moves the node to a fresh key (warren up --force-reauth): the
// server keeps its name and addresses, peers get the new key in a delta.
// The new key is written next to the old one before the server is asked,
// and replaces it only once the server agreed. The caller holds the op
// slot; d.mu is not held while the server is asked.
func (d *Daemon) rotateKey(ctx context.Context) error {
	d.mu.Lock()
	wasRunning := d.cc != nil
	d.stopControlLocked()
	cc, err := d.controlClient(d.key)
	serverURL := d.prefs.ServerURL
	d.mu.Unlock()
	restart := func() {
		if wasRunning {
			d.mu.Lock()
			defer d.mu.Unlock()
			if err := d.startControlLocked(); err != nil {
				d.log.Error("restart control client", "err", err)
			}
		}
	}
	if err != nil {
		restart()
		return err
	}
	next, err := noise.GeneratePrivateKey()
	if err != nil {
		restart()
		return err
	}
	pending := filepath.Join(d.cfg.StateDir, keyFile+".next")
	if err := writeFileAtomic(pending, []byte(next.Base64()+"\n"), 0o600); err != nil {
		restart()
		return fmt.Errorf("node key: %w", err)
	}
	defer os.Remove(pending)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := cc.RotateKey(rctx, next)
	cancel()
	if err != nil {
		restart()
		var re *client.RegisterError
		if errors.As(err, &re) {
			return errors.New(re.Message)
		}
		return fmt.Errorf("rotate key with %s: %w", serverURL, err)
	}
	if err := os.Rename(pending, filepath.Join(d.cfg.StateDir, keyFile)); err != nil {
		return fmt.Errorf("node key: the server has the new key but it could not be saved: %w", err)
	}
	d.mu.Lock()
	d.key = next
	err = d.eng.Apply(&uapi.Config{PrivateKey: &next})
	if err == nil {
		d.eng.SetNodeKey(pubkey.Node{PublicKey: next.PublicKey()})
		d.stopRelayLocked() // the relay session authenticated the old key
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("install new key: %w", err)
	}
	d.log.Info("node key rotated", "name", node.Name, "key", next.PublicKey().String())
	restart()
	return nil
}

// global or private unicast address of an up interface other than the
// tunnel, with the engine's UDP port.
func (d *Daemon) localEndpoints() []netip.AddrPort {
	port := d.eng.Port()
	if port == 0 {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Name == d.cfg.TUN {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, netip.AddrPortFrom(ip, port))
			if len(out) == 32 {
				return out
			}
		}
	}
	return out
}

// endpointLoop reports endpoint changes to the server and re-applies the
// map now and then (peers whose expiry passed leave the engine).
func (d *Daemon) endpointLoop(ctx context.Context) {
	t := clock.NewChanTimer(d.clk)
	t.Reset(15 * time.Second)
	defer t.Stop()
	var last []netip.AddrPort
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(15 * time.Second)
		}
		eps := d.endpoints()
		d.eng.SetLocalEndpoints(eps)
		d.mu.Lock()
		cc := d.cc
		if d.nm != nil && cc != nil {
			d.applyMapLocked(d.nm)
		}
		d.mu.Unlock()
		if cc != nil && !slices.Equal(eps, last) {
			if err := cc.SetEndpoints(eps); err == nil {
				last = eps
			}
		}
	}
}
