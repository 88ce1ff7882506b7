package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Server limits.
const (
	maxInFlight  = 512             // queries being answered at once; more are dropped
	queryTimeout = 5 * time.Second // to answer one query, forwarding included
	maxTCPPerCon = 128             // queries on one TCP connection
)

// Server serves a Resolver over UDP and TCP. Queries from a source that
// Allow rejects are dropped unread (no answer, no error reply; a TCP
// connection is closed on accept). It is safe for concurrent use.
type Server struct {
	r     *Resolver
	allow func(netip.Addr) bool
	sem   chan struct{}

	mu     sync.Mutex
	srvs   []*mdns.Server
	closed bool
}

// NewServer returns a server for r. allow decides which source addresses
// are answered; nil allows loopback sources only. The daemon passes a
// function accepting its tunnel's peers (and itself).
func NewServer(r *Resolver, allow func(netip.Addr) bool) *Server {
	if allow == nil {
		allow = func(a netip.Addr) bool { return a.IsLoopback() }
	}
	return &Server{r: r, allow: allow, sem: make(chan struct{}, maxInFlight)}
}

// Listen binds UDP and TCP on addr (port 0: one free port for both) and
// serves them until Close. It returns the bound address.
func (s *Server) Listen(addr netip.AddrPort) (netip.AddrPort, error) {
	return s.ListenDevice(addr, "")
}

// ListenDevice is Listen with both sockets bound to network device dev
// (SO_BINDTODEVICE; none if ""): only packets that arrive through dev, or
// that the host itself sends to an address of dev, reach them. The daemon
// binds its resolver to the tunnel device, so that a host on another
// interface (the LAN) cannot reach it by forging a peer's tunnel address.
func (s *Server) ListenDevice(addr netip.AddrPort, dev string) (netip.AddrPort, error) {
	lc := net.ListenConfig{}
	if dev != "" {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) }); err != nil {
				return err
			}
			return serr
		}
	}
	ctx := context.Background()
	var err error
	for range 10 {
		var pc net.PacketConn
		pc, err = lc.ListenPacket(ctx, "udp", addr.String())
		if err != nil {
			return netip.AddrPort{}, err
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		var l net.Listener
		l, err = lc.Listen(ctx, "tcp", bound.String())
		if err != nil {
			pc.Close()
			if addr.Port() == 0 {
				continue // the UDP port is taken on TCP: try another
			}
			return netip.AddrPort{}, err
		}
		if err := s.Serve(pc, l); err != nil {
			return netip.AddrPort{}, err
		}
		return bound, nil
	}
	return netip.AddrPort{}, err
}

// Serve serves DNS on pc (UDP) and l (TCP), either of which may be nil, in
// the background until Close; it returns once both are being served. The
// server owns and closes them.
func (s *Server) Serve(pc net.PacketConn, l net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if pc != nil {
			pc.Close()
		}
		if l != nil {
			l.Close()
		}
		return errors.New("dns: server closed")
	}
	start := func(srv *mdns.Server) error {
		started := make(chan struct{})
		srv.Handler = s
		srv.UDPSize = EDNSSize
		srv.MaxTCPQueries = maxTCPPerCon
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
			s.srvs = append(s.srvs, srv)
			return nil
		case err := <-done:
			return fmt.Errorf("dns: serve: %w", err)
		}
	}
	var err error
	if pc != nil {
		err = start(&mdns.Server{PacketConn: allowPacketConn{pc, s.allow}})
	}
	if l != nil {
		if err == nil {
			err = start(&mdns.Server{Listener: allowListener{l, s.allow}})
		} else {
			l.Close()
		}
	}
	return err
}

// Close stops serving and closes the sockets.
func (s *Server) Close() error {
	s.mu.Lock()
	srvs := s.srvs
	s.srvs, s.closed = nil, true
	s.mu.Unlock()
	var errs []error
	for _, srv := range srvs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.ShutdownContext(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// ServeDNS answers one query (mdns.Handler).
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if !s.allow(addrOf(w.RemoteAddr())) {
		if tcp {
			w.Close()
		}
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return // overloaded: the client retries
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if resp := s.respond(ctx, req, tcp); resp != nil {
		w.WriteMsg(resp)
	}
}

// respond builds the reply to req, nil for none: EDNS0 per RFC 6891
// (BADVERS for versions other than 0; our size EDNSSize; the client's size,
// at least 512 and at most EDNSSize, bounds a UDP reply) and truncation
// with TC when the answer does not fit.
func (s *Server) respond(ctx context.Context, req *mdns.Msg, tcp bool) *mdns.Msg {
	if req.Response {
		return nil
	}
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	var opt *mdns.OPT
	nopt := 0
	for _, rr := range req.Extra {
		if o, ok := rr.(*mdns.OPT); ok {
			opt = o
			nopt++
		}
	}
	size := mdns.MinMsgSize
	if opt != nil {
		size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), EDNSSize)
		resp.SetEdns0(EDNSSize, false)
	}
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		resp.Rcode = mdns.RcodeNotImplemented
		return resp
	case len(req.Question) != 1 || nopt > 1:
		resp.Rcode = mdns.RcodeFormatError
		return resp
	case opt != nil && opt.Version() != 0:
		resp.Rcode = mdns.RcodeBadVers
		return resp
	}
	ans := s.r.Resolve(ctx, req.Question[0])
	resp.Rcode = ans.Rcode
	if resp.Rcode > 0xF && opt == nil {
		resp.Rcode = mdns.RcodeServerFailure // an extended rcode needs an OPT to travel in
	}
	resp.Authoritative = ans.Authoritative
	resp.Answer, resp.Ns = ans.Answer, ans.Ns
	resp.Extra = append(ans.Extra, resp.Extra...) // our OPT last
	if tcp {
		size = mdns.MaxMsgSize
	}
	resp.Truncate(size)
	resp.Compress = true
	return resp
}

// handleRaw answers one raw query the way the server does after reading
// it: unpack, respond, pack. nil means no reply. Used by the fuzz target.
func (s *Server) handleRaw(ctx context.Context, raw []byte, tcp bool) []byte {
	req := new(mdns.Msg)
	if err := req.Unpack(raw); err != nil {
		return nil
	}
	resp := s.respond(ctx, req, tcp)
	if resp == nil {
		return nil
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// allowPacketConn drops datagrams from sources allow rejects before
// miekg/dns sees them (so not even a FORMERR goes back).
type allowPacketConn struct {
	net.PacketConn
	allow func(netip.Addr) bool
}

func (c allowPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || c.allow(addrOf(a)) {
			return n, a, err
		}
	}
}

// allowListener closes connections from sources allow rejects.
type allowListener struct {
	net.Listener
	allow func(netip.Addr) bool
}

func (l allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.allow(addrOf(c.RemoteAddr())) {
			return c, err
		}
		c.Close()
	}
}
