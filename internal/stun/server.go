package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Server answers Binding requests on a UDP socket. Anything else is
// ignored. It keeps no per-client state.
type Server struct {
	// Requests and Answered count what Serve saw and sent.
	Requests, Answered, Ignored atomic.Int64
}

// Serve answers Binding requests on pc until it is closed; it then
// returns nil.
func (s *Server) Serve(pc net.PacketConn) error {
	buf := make([]byte, MaxMessageLen+1)
	out := make([]byte, 0, 128)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return err
			}
			continue // e.g. ICMP errors surfacing on the socket
		}
		m, err := Parse(buf[:n])
		if err != nil || !m.IsBindingRequest() {
			s.Ignored.Add(1)
			continue
		}
		s.Requests.Add(1)
		ap, ok := addrPort(from)
		if !ok {
			continue
		}
		out = AppendResponse(out[:0], m.TxID, ap)
		if _, err := pc.WriteTo(out, from); err == nil {
			s.Answered.Add(1)
		}
	}
}

// Listen opens a UDP socket on addr (e.g. ":3478") and answers Binding
// requests on it in the background until ctx ends. It returns the socket's
// address.
func Listen(ctx context.Context, addr string) (net.Addr, *Server, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("stun: %w", err)
	}
	s := &Server{}
	go s.Serve(pc)
	context.AfterFunc(ctx, func() { pc.Close() })
	return pc.LocalAddr(), s, nil
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

// Request sends a Binding request from pc to server and returns the
// address the server saw it come from. It reads pc until the matching
// response arrives or ctx ends, retransmitting every 500 ms (doubling, at
// most 2 s apart); packets that are not the answer are dropped, so use it
// on a socket whose other reader is paused, or demultiplex with Is and
// Parse instead. Without a deadline on ctx, 5 seconds apply.
func Request(ctx context.Context, pc net.PacketConn, server net.Addr) (netip.AddrPort, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	tx := NewTxID()
	req := AppendRequest(nil, tx)
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		pc.SetReadDeadline(time.Time{})
	}()
	buf := make([]byte, MaxMessageLen+1)
	rto := 500 * time.Millisecond
	for {
		if _, err := pc.WriteTo(req, server); err != nil {
			return netip.AddrPort{}, fmt.Errorf("stun: %w", err)
		}
		next := time.Now().Add(rto)
		rto = min(2*rto, 2*time.Second)
		for {
			if ctx.Err() != nil {
				return netip.AddrPort{}, fmt.Errorf("stun: no answer from %s: %w", server, ctx.Err())
			}
			dl := next
			if d, ok := ctx.Deadline(); ok && d.Before(dl) {
				dl = d
			}
			pc.SetReadDeadline(dl)
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit (or ctx is done)
				}
				return netip.AddrPort{}, fmt.Errorf("stun: %w", err)
			}
			m, err := Parse(buf[:n])
			if err != nil || m.TxID != tx || !m.IsBindingSuccess() {
				continue
			}
			if !m.Mapped.IsValid() {
				return netip.AddrPort{}, ErrNoAddress
			}
			return m.Mapped, nil
		}
	}
}
