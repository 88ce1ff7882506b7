package localapi

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Passing an open file to the daemon: the CLI attaches the descriptor
// (SCM_RIGHTS) to the first bytes of its request on the unix socket, and
// the server side of every API connection reads with recvmsg, keeping the
// one descriptor a request may carry until its handler takes it
// (ReceivedFile) or the connection closes. The CLI opens the file as the
// calling user, so the daemon reads only what that user may read.

// fdSendConn attaches fd to its first write.
type fdSendConn struct {
	*net.UnixConn
	fd   int
	sent bool
}

func (c *fdSendConn) Write(p []byte) (int, error) {
	if c.sent {
		return c.UnixConn.Write(p)
	}
	c.sent = true
	n, _, err := c.UnixConn.WriteMsgUnix(p, unix.UnixRights(c.fd), nil)
	if err != nil || n == len(p) {
		return n, err
	}
	m, err := c.UnixConn.Write(p[n:])
	return n + m, err
}

// fdRecvConn keeps the first descriptor its peer sends; any more are
// closed at once.
type fdRecvConn struct {
	*net.UnixConn
	oob []byte

	mu     sync.Mutex
	file   *os.File
	closed bool
}

func newFDRecvConn(c *net.UnixConn) *fdRecvConn {
	return &fdRecvConn{UnixConn: c, oob: make([]byte, unix.CmsgSpace(4*4))}
}

func (c *fdRecvConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := c.UnixConn.ReadMsgUnix(p, c.oob) // MSG_CMSG_CLOEXEC
	if oobn > 0 {
		c.keep(c.oob[:oobn])
	}
	return n, err
}

func (c *fdRecvConn) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			c.mu.Lock()
			if c.file == nil && !c.closed {
				c.file = os.NewFile(uintptr(fd), "passed file")
				fd = -1
			}
			c.mu.Unlock()
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
}

func (c *fdRecvConn) take() *os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.file
	c.file = nil
	return f
}

func (c *fdRecvConn) Close() error {
	c.mu.Lock()
	c.closed = true
	f := c.file
	c.file = nil
	c.mu.Unlock()
	if f != nil {
		f.Close()
	}
	return c.UnixConn.Close()
}

type connCtxKey struct{}

// connContext stores a connection in its requests' contexts.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connCtxKey{}, c)
}

// ReceivedFile returns the file descriptor the client passed with r (nil
// if none), which the caller then owns and closes.
func ReceivedFile(r *http.Request) *os.File {
	c, _ := r.Context().Value(connCtxKey{}).(*fdRecvConn)
	if c == nil {
		return nil
	}
	return c.take()
}
