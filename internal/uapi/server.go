package uapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Serve accepts configuration clients on l until l is closed, then closes
// the connections still open, waits for their handlers and returns nil (or
// the accept error that stopped it). Connections are served concurrently,
// the requests of one connection in order; calls into dev are serialised,
// so dev never sees two at once from one Serve. log (nil discards) gets a
// debug line per failed request and a warning per refused client.
//
// Every request, known or not, is read up to its terminating blank line and
// answered with "errno=N" and a blank line, N being 0 or the negated errno
// (as wireguard-go does, and as wg(8) expects), so a bad request does not
// desynchronise the connection. Stray blank lines between requests are
// ignored. A connection is closed when its stream ends or fails in the
// middle of a request, and when a unix-socket client is neither root nor
// the server's own user.
func Serve(l net.Listener, dev Device, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{dev: dev, log: log}
	var (
		wg     sync.WaitGroup
		connMu sync.Mutex
		conns  = make(map[net.Conn]struct{})
	)
	defer func() {
		connMu.Lock()
		for c := range conns {
			c.Close()
		}
		connMu.Unlock()
		wg.Wait()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !temporaryAcceptError(err) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("uapi: accept failed; retrying", "err", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		connMu.Lock()
		conns[c] = struct{}{}
		connMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(c)
			connMu.Lock()
			delete(conns, c)
			connMu.Unlock()
		}()
	}
}

func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

type server struct {
	dev Device
	log *slog.Logger
	mu  sync.Mutex // serialises calls into dev
}

func (s *server) serveConn(c net.Conn) {
	defer c.Close()
	if uc, ok := c.(*net.UnixConn); ok {
		if err := checkPeer(uc); err != nil {
			s.log.Warn("uapi: rejecting client", "err", err)
			return
		}
	}
	if err := s.handle(c); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("uapi: connection failed", "err", err)
	}
}

// checkPeer admits only root and the server's own user. The socket's mode
// already keeps everyone else out; this guards against a socket whose mode
// was widened by hand.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d (pid %d) is not allowed", cred.Uid, cred.Pid)
	}
	return nil
}

// handle serves the requests of one connection in order. It returns nil at
// a clean end of stream (between requests).
func (s *server) handle(rw io.ReadWriter) error {
	r := bufio.NewReaderSize(rw, 4096)
	w := bufio.NewWriterSize(rw, 32<<10)
	var buf []byte
	for {
		line, long, err := readLine(r, buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		buf = line
		if !long && len(line) == 0 {
			continue // stray blank line between requests
		}
		var (
			reqErr error
			fatal  error
		)
		switch op := string(line); {
		case !long && op == "get=1":
			n, err := skipRequest(r, buf)
			switch {
			case err != nil:
				reqErr = &Error{Errno: EPROTO, Err: fmt.Errorf("%w: %w", ErrIncomplete, err)}
				fatal = err
			case n > 0:
				reqErr = Errorf(EINVAL, "get: %d unexpected lines after get=1", n)
			default:
				s.mu.Lock()
				st := s.dev.State()
				s.mu.Unlock()
				if err := WriteState(w, st); err != nil {
					return err
				}
			}
		case !long && op == "set=1":
			cfg, err := ParseSet(r)
			if err != nil {
				reqErr = err
				if errors.Is(err, ErrIncomplete) {
					fatal = err
				}
				break
			}
			s.mu.Lock()
			reqErr = s.dev.Apply(cfg)
			s.mu.Unlock()
		default:
			if long {
				op = "(overlong line)"
			}
			_, err := skipRequest(r, buf)
			reqErr = Errorf(EPROTO, "unknown operation %s", quote(op))
			if err != nil {
				fatal = err
			}
		}
		errno := errnoOf(reqErr)
		if reqErr != nil {
			s.log.Debug("uapi: request failed", "errno", errno, "err", reqErr)
		}
		w.WriteString("errno=")
		w.WriteString(strconv.FormatInt(-errno, 10))
		w.WriteString("\n\n")
		if err := w.Flush(); err != nil {
			return err
		}
		if fatal != nil {
			return fatal
		}
	}
}

// errnoOf maps a request's error to the positive errno to report: 0 for
// nil, the *Error's errno (EINVAL if it holds none), EINVAL otherwise.
func errnoOf(err error) int64 {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		n := e.Errno
		if n < 0 {
			n = -n
		}
		if n > 0 { // not so for 0, nor for -MinInt64
			return n
		}
	}
	return EINVAL
}
