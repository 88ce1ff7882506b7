// Package portmap owns port mapping: it asks the LAN's gateway — with PCP
// (RFC 6887), NAT-PMP (RFC 6886) or UPnP-IGD — to forward an external UDP
// port to the node's WireGuard port, so that peers can reach a node even
// behind a NAT that picks a new port for every destination. A Client finds
// the gateway (the IPv4 default route's), keeps one mapping, renews it
// before it expires, remaps when the gateway's epoch shows it restarted and
// deletes the mapping on Close. Replies that do not come from the gateway's
// address and port, or do not answer the request (opcode, port, protocol,
// PCP nonce, an epoch inconsistent with the last), are ignored and counted
// in Stats. PCP and NAT-PMP are small binary protocols written here; UPnP
// uses github.com/huin/goupnp for the device description and SOAP.
package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// Protocol names a port mapping protocol.
type Protocol string

// The protocols, in the order a Client tries them.
const (
	PCP    Protocol = "pcp"
	NATPMP Protocol = "nat-pmp"
	UPnP   Protocol = "upnp"
)

// pmpPort is where a gateway answers PCP and NAT-PMP (RFC 6886 §3.1).
const pmpPort = 5351

// Defaults.
const (
	DefaultLifetime = 2 * time.Hour
	// DefaultRefresh is the longest time between two renewals: a gateway
	// that restarted (and forgot the mapping) is noticed at the latest
	// then, by its epoch.
	DefaultRefresh = 5 * time.Minute
	retryMin       = 30 * time.Second
	retryMax       = 5 * time.Minute
)

// Mapping is a port mapping the gateway granted.
type Mapping struct {
	Protocol Protocol
	Gateway  netip.Addr
	Internal netip.AddrPort // this host's address and the mapped port
	External netip.AddrPort // where peers reach it
	Lifetime time.Duration  // as granted
	Obtained time.Time
}

// Stats counts replies a Client ignored, by reason. They are read at
// scrape time by the metrics collector.
type Stats struct {
	WrongSource atomic.Uint64 // not from the gateway's address and port
	WrongNonce  atomic.Uint64 // a PCP reply with another mapping nonce
	Mismatch    atomic.Uint64 // another opcode, port or protocol than asked
	BadEpoch    atomic.Uint64 // an epoch inconsistent with the last (gateway restart or forgery)
	Malformed   atomic.Uint64 // could not be parsed
}

// Options configures a Client.
type Options struct {
	// Port is the local UDP port to map (the WireGuard port). Required.
	Port uint16
	// Gateway finds the gateway and this host's address towards it;
	// default DefaultGateway with Control.
	Gateway func() (gw, self netip.Addr, err error)
	// Control is applied to every socket the client opens (the daemon's
	// underlay routing mark); may be nil.
	Control func(network, address string, c syscall.RawConn) error
	// Protocols to try, in order; default PCP, NAT-PMP, UPnP.
	Protocols []Protocol
	// Lifetime is the mapping lifetime asked for; default DefaultLifetime.
	Lifetime time.Duration
	// Refresh bounds the time between renewals; default DefaultRefresh.
	Refresh time.Duration
	// ServerPort is the gateway's PCP/NAT-PMP port (tests); default 5351.
	ServerPort uint16
	// SSDPPort is the gateway's SSDP port (tests); default 1900.
	SSDPPort uint16
	// AnnounceAddr is where the gateway's restart announcements arrive
	// (tests); default ":5350".
	AnnounceAddr string
	// Attempts is how many times a PCP/NAT-PMP request is sent (waiting
	// 250 ms, then twice as long each time, RFC 6886 §3.1); default 3.
	Attempts int
	// OnChange is called (from the client's goroutine) when the mapped
	// external endpoint appears, changes or goes away.
	OnChange func()
	Clock    clock.Clock
	Logger   *slog.Logger
}

// Client keeps one port mapping on the gateway.
type Client struct {
	opts  Options
	clk   clock.Clock
	log   *slog.Logger
	Stats Stats

	kick    chan struct{}
	nonce   pcpNonce      // the PCP mapping nonce, kept for renewals and delete
	annPort atomic.Uint32 // the bound announcement port (tests)

	mu       sync.Mutex
	cur      *Mapping
	gw       netip.Addr
	epochs   map[Protocol]*epochState
	upnp     *upnpGateway // the gateway's IGD service, once found
	failures int
}

// New returns a client; Run keeps the mapping.
func New(opts Options) *Client {
	if opts.Gateway == nil {
		control := opts.Control
		opts.Gateway = func() (netip.Addr, netip.Addr, error) { return DefaultGateway(control) }
	}
	if len(opts.Protocols) == 0 {
		opts.Protocols = []Protocol{PCP, NATPMP, UPnP}
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.ServerPort == 0 {
		opts.ServerPort = pmpPort
	}
	if opts.SSDPPort == 0 {
		opts.SSDPPort = 1900
	}
	if opts.AnnounceAddr == "" {
		opts.AnnounceAddr = ":5350"
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts, clk: clock.Or(opts.Clock), log: opts.Logger, kick: make(chan struct{}, 1), epochs: map[Protocol]*epochState{}}
	if _, err := rand.Read(c.nonce[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return c
}

// Mapping returns the current mapping, if there is one.
func (c *Client) Mapping() (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return Mapping{}, false
	}
	return *c.cur, true
}

// External is the mapped external endpoint, or the zero value.
func (c *Client) External() netip.AddrPort {
	m, _ := c.Mapping()
	return m.External
}

// Run maps the port now and keeps the mapping until ctx ends; then the
// caller deletes it with Close.
func (c *Client) Run(ctx context.Context) {
	t := c.clk.NewTimer(c.poke)
	defer t.Stop()
	annDone := make(chan struct{})
	go func() { defer close(annDone); c.listenAnnouncements(ctx) }()
	defer func() { <-annDone }()
	c.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		t.Reset(c.refresh(ctx))
	}
}

// poke asks Run to refresh the mapping now.
func (c *Client) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// refresh maps or renews and returns when to do it next.
func (c *Client) refresh(ctx context.Context) time.Duration {
	gw, self, err := c.opts.Gateway()
	if err != nil {
		c.log.Debug("port mapping: no gateway", "err", err)
		c.set(nil)
		return c.retryLater()
	}
	c.mu.Lock()
	if c.gw != gw {
		// Another gateway (the host moved): its epochs and services are
		// new, and the old mapping is unreachable anyway.
		c.gw, c.epochs, c.upnp, c.cur = gw, map[Protocol]*epochState{}, nil, nil
	}
	prev := c.cur
	c.mu.Unlock()
	order := c.opts.Protocols
	if prev != nil { // the protocol that worked first
		order = append([]Protocol{prev.Protocol}, without(order, prev.Protocol)...)
	}
	var errs []error
	for _, p := range order {
		m, err := c.mapWith(ctx, p, gw, self, prev)
		if err == nil {
			c.mu.Lock()
			c.failures = 0
			c.mu.Unlock()
			c.set(&m)
			next := min(m.Lifetime/2, c.opts.Refresh)
			return max(next, time.Second)
		}
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
		if ctx.Err() != nil {
			return time.Hour
		}
	}
	c.log.Debug("port mapping failed", "gateway", gw, "err", errors.Join(errs...))
	c.set(nil)
	return c.retryLater()
}

func without(ps []Protocol, p Protocol) []Protocol {
	var out []Protocol
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// retryLater is the wait after a failure: 30 s, doubling to 5 minutes.
func (c *Client) retryLater() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := retryMin << min(c.failures, 4)
	c.failures++
	return min(d, retryMax)
}

// set records the current mapping and reports a change of endpoint.
func (c *Client) set(m *Mapping) {
	c.mu.Lock()
	var was netip.AddrPort
	if c.cur != nil {
		was = c.cur.External
	}
	c.cur = m
	var now netip.AddrPort
	if m != nil {
		now = m.External
	}
	c.mu.Unlock()
	if was == now {
		return
	}
	if m != nil {
		c.log.Info("port mapped", "protocol", m.Protocol, "gateway", m.Gateway, "external", m.External, "lifetime", m.Lifetime)
	} else {
		c.log.Info("port mapping lost", "was", was)
	}
	if c.opts.OnChange != nil {
		c.opts.OnChange()
	}
}

// mapWith asks the gateway for the mapping (or its renewal) with p.
func (c *Client) mapWith(ctx context.Context, p Protocol, gw, self netip.Addr, prev *Mapping) (Mapping, error) {
	var m Mapping
	var err error
	switch p {
	case PCP:
		m, err = c.mapPCP(ctx, gw, self, prev)
	case NATPMP:
		m, err = c.mapPMP(ctx, gw, self, prev)
	case UPnP:
		m, err = c.mapUPnP(ctx, gw, self, prev)
	default:
		return m, fmt.Errorf("unknown protocol %q", p)
	}
	if err != nil {
		return m, err
	}
	if err := checkExternal(m.External); err != nil {
		return Mapping{}, err
	}
	m.Protocol, m.Gateway, m.Internal, m.Obtained = p, gw, netip.AddrPortFrom(self, c.opts.Port), c.clk.Now()
	return m, nil
}

// checkExternal refuses an external endpoint no peer could use.
func checkExternal(ap netip.AddrPort) error {
	a := ap.Addr()
	if !a.IsValid() || !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || ap.Port() == 0 {
		return fmt.Errorf("unusable external endpoint %v", ap)
	}
	return nil
}

// suggestion is the external port to ask for: the one we had, else the
// internal port (gateways that can keep it do).
func (c *Client) suggestion(prev *Mapping, p Protocol) uint16 {
	if prev != nil && prev.Protocol == p {
		return prev.External.Port()
	}
	return c.opts.Port
}

func lifetimeSec(d time.Duration) uint32 {
	return uint32(min(d, 24*time.Hour) / time.Second)
}

// Close deletes the mapping from the gateway (best effort, bounded by ctx)
// and forgets it. Run must have returned.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	m := c.cur
	c.cur = nil
	c.mu.Unlock()
	if m == nil {
		return nil
	}
	var err error
	switch m.Protocol {
	case PCP:
		err = c.deletePCP(ctx, m)
	case NATPMP:
		err = c.deletePMP(ctx, m)
	case UPnP:
		err = c.deleteUPnP(ctx, m)
	}
	if err != nil {
		return fmt.Errorf("delete %s mapping %v: %w", m.Protocol, m.External, err)
	}
	c.log.Info("port mapping deleted", "protocol", m.Protocol, "external", m.External)
	return nil
}

// listen opens the client's UDP socket for one exchange.
func (c *Client) listen(ctx context.Context) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: c.opts.Control}
	pc, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// Ignore reasons an accept function returns.
type ignoreReason int

const (
	accepted ignoreReason = iota
	ignoreNonce
	ignoreMismatch
	ignoreEpoch
	ignoreMalformed
)

func (c *Client) count(r ignoreReason) {
	switch r {
	case ignoreNonce:
		c.Stats.WrongNonce.Add(1)
	case ignoreMismatch:
		c.Stats.Mismatch.Add(1)
	case ignoreEpoch:
		c.Stats.BadEpoch.Add(1)
	case ignoreMalformed:
		c.Stats.Malformed.Add(1)
	}
}

// errNoAnswer is an exchange that got no acceptable reply.
var errNoAnswer = errors.New("no answer from the gateway")

// exchange sends req to the gateway's PCP/NAT-PMP port and reads replies
// until accept takes one (it returns accepted and the outcome) or the
// attempts run out. Replies from any other address or port, and those
// accept ignores, are counted and the wait goes on; an epoch rejection
// re-sends at once (a restarted gateway answers again with its new epoch).
func (c *Client) exchange(ctx context.Context, gw netip.Addr, req []byte, accept func([]byte) (ignoreReason, error)) error {
	conn, err := c.listen(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	server := netip.AddrPortFrom(gw, c.opts.ServerPort)
	buf := make([]byte, pcpMaxLen+1)
	wait := 250 * time.Millisecond
	for attempt := 0; attempt < c.opts.Attempts; attempt++ {
		if _, err := conn.WriteToUDPAddrPort(req, server); err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		wait *= 2
		if err := conn.SetReadDeadline(deadline); err != nil {
			return err
		}
	read:
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break read
				}
				return err
			}
			if from.Addr().Unmap() != gw || from.Port() != c.opts.ServerPort {
				c.Stats.WrongSource.Add(1)
				continue
			}
			why, err := accept(buf[:n])
			switch why {
			case accepted:
				return err
			case ignoreEpoch:
				c.count(why)
				break read // ask again: the next answer sets the new epoch
			default:
				c.count(why)
			}
		}
	}
	return errNoAnswer
}
