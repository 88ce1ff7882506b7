// Package socks5 is a small SOCKS5 server (RFC 1928): no authentication,
// the CONNECT command only, addresses as IPv4, IPv6 or a domain name that
// the caller's Dial resolves (the userspace daemon resolves through
// MagicDNS and dials through its netstack). Every failure gets the RFC's
// reply code; a client that does not finish its request in time is cut.
package socks5

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Reply codes (RFC 1928 section 6).
const (
	ReplySucceeded           byte = 0x00
	ReplyGeneralFailure      byte = 0x01
	ReplyNotAllowed          byte = 0x02
	ReplyNetworkUnreachable  byte = 0x03
	ReplyHostUnreachable     byte = 0x04
	ReplyConnectionRefused   byte = 0x05
	ReplyTTLExpired          byte = 0x06
	ReplyCommandNotSupported byte = 0x07
	ReplyAddrNotSupported    byte = 0x08
)

const (
	version       = 5
	cmdConnect    = 1
	atypIPv4      = 1
	atypDomain    = 3
	atypIPv6      = 4
	methodNone    = 0x00
	methodNoneAcc = 0xff
)

// Request is a parsed SOCKS5 request: the destination as an address or a
// name, and a port.
type Request struct {
	Cmd  byte
	Addr netip.Addr // set for IPv4/IPv6 requests
	Name string     // set for domain-name requests
	Port uint16
}

// Host is the destination's address or name.
func (r *Request) Host() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Addr.String()
}

// ReplyError is a request that was refused with a reply code.
type ReplyError struct {
	Code byte
	Msg  string
}

func (e *ReplyError) Error() string { return "socks5: " + e.Msg }

// Errorf returns an error that Dial uses to choose the reply code.
func Errorf(code byte, msg string) error { return &ReplyError{Code: code, Msg: msg} }

// ReadGreeting reads the client's method selection and reports whether
// it offers "no authentication".
func ReadGreeting(r io.Reader) (bool, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return false, err
	}
	if h[0] != version {
		return false, Errorf(ReplyGeneralFailure, "not SOCKS version 5")
	}
	var methods [255]byte
	m := methods[:h[1]]
	if _, err := io.ReadFull(r, m); err != nil {
		return false, err
	}
	for _, x := range m {
		if x == methodNone {
			return true, nil
		}
	}
	return false, nil
}

// ReadRequest parses a request. Errors that deserve a reply are
// *ReplyError; others (a short read) mean the client went away.
func ReadRequest(r io.Reader) (*Request, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != version {
		return nil, Errorf(ReplyGeneralFailure, "not SOCKS version 5")
	}
	req := &Request{Cmd: h[1]}
	switch h[3] {
	case atypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return nil, err
		}
		req.Addr = netip.AddrFrom4(a)
	case atypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return nil, err
		}
		req.Addr = netip.AddrFrom16(a).Unmap()
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, err
		}
		var nb [255]byte
		name := nb[:l[0]]
		if _, err := io.ReadFull(r, name); err != nil {
			return nil, err
		}
		if !validName(name) {
			// The port still follows; the request is refused anyway.
			return nil, Errorf(ReplyHostUnreachable, "malformed domain name")
		}
		req.Name = string(name)
	default:
		return nil, Errorf(ReplyAddrNotSupported, "unknown address type")
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return nil, err
	}
	req.Port = binary.BigEndian.Uint16(p[:])
	if h[2] != 0 {
		return nil, Errorf(ReplyGeneralFailure, "reserved byte not zero")
	}
	if req.Cmd != cmdConnect {
		return nil, Errorf(ReplyCommandNotSupported, "only CONNECT is supported")
	}
	return req, nil
}

// validName accepts host names: letters, digits, '-', '_' and dots, no
// empty label (a trailing dot is allowed).
func validName(b []byte) bool {
	if len(b) == 0 || b[0] == '.' {
		return false
	}
	prevDot := false
	for _, c := range b {
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		prevDot = false
	}
	return true
}

// writeReply sends a reply with the bound address (zero unless known).
func writeReply(w io.Writer, code byte, bound netip.AddrPort) error {
	b := make([]byte, 0, 22)
	b = append(b, version, code, 0)
	a := bound.Addr()
	if a.Is6() && !a.Is4In6() {
		b = append(b, atypIPv6)
		s := a.As16()
		b = append(b, s[:]...)
	} else {
		b = append(b, atypIPv4)
		s := a.Unmap()
		if !s.Is4() {
			s = netip.IPv4Unspecified()
		}
		f := s.As4()
		b = append(b, f[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, bound.Port())
	_, err := w.Write(b)
	return err
}

// Server serves SOCKS5 clients.
type Server struct {
	// Dial connects to the destination of a CONNECT; a *ReplyError
	// chooses the reply code (else general failure, or host unreachable
	// when it timed out).
	Dial func(ctx context.Context, req *Request) (net.Conn, error)
	// HandshakeTimeout bounds the time from accept to a complete
	// request; default 10 s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds Dial; default 30 s.
	DialTimeout time.Duration
	// MaxClients bounds the clients served at once (default 1024); one
	// more is disconnected at once.
	MaxClients int
	Logger     *slog.Logger

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	clients int
	closed  bool
	wg      sync.WaitGroup
}

// Serve accepts clients on l until it is closed.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		ok, full := s.admit(c)
		if !ok {
			c.Close()
			return net.ErrClosed
		}
		if full {
			s.log().Warn("socks5: too many clients, one refused", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.release(c)
			defer c.Close()
			s.handle(c)
		}()
	}
}

// Close cuts every client and waits for their goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// admit tracks a new client; ok false: the server is closed; full: too
// many clients.
func (s *Server) admit(c net.Conn) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	max := s.MaxClients
	if max <= 0 {
		max = 1024
	}
	switch {
	case s.closed:
		return false, false
	case s.clients >= max:
		return true, true
	}
	s.clients++
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true, false
}

func (s *Server) release(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients--
	delete(s.conns, c)
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) handle(c net.Conn) {
	ht := s.HandshakeTimeout
	if ht <= 0 {
		ht = 10 * time.Second
	}
	c.SetDeadline(time.Now().Add(ht))
	ok, err := ReadGreeting(c)
	if err != nil {
		return
	}
	if !ok {
		c.Write([]byte{version, methodNoneAcc})
		return
	}
	if _, err := c.Write([]byte{version, methodNone}); err != nil {
		return
	}
	req, err := ReadRequest(c)
	if err != nil {
		var re *ReplyError
		if errors.As(err, &re) {
			writeReply(c, re.Code, netip.AddrPort{})
			s.log().Debug("socks5: request refused", "from", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	dt := s.DialTimeout
	if dt <= 0 {
		dt = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), dt)
	out, err := s.Dial(ctx, req)
	timedOut := ctx.Err() == context.DeadlineExceeded
	cancel()
	if err != nil {
		code := ReplyGeneralFailure
		var re *ReplyError
		switch {
		case errors.As(err, &re):
			code = re.Code
		case timedOut || errors.Is(err, context.DeadlineExceeded):
			code = ReplyHostUnreachable
		}
		s.log().Debug("socks5: connect failed", "to", req.Host(), "port", req.Port, "err", err)
		c.SetDeadline(time.Now().Add(ht))
		writeReply(c, code, netip.AddrPort{})
		return
	}
	defer out.Close()
	if !s.track(out, true) {
		return
	}
	defer s.track(out, false)
	bound := netip.AddrPort{}
	if ta, ok := out.LocalAddr().(*net.TCPAddr); ok {
		bound = ta.AddrPort()
	}
	if err := writeReply(c, ReplySucceeded, bound); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	Splice(c, out)
}

// Splice copies both ways until both directions are done, passing on
// half-closes.
func Splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
