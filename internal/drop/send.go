package drop

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrChanged: the file being sent changed (size or modification time)
// while it was read; the receiver gets no trailer and never finishes it.
var ErrChanged = errors.New("the file changed while it was being sent; run again to send its new version")

// hashChunk is how much of the file a sender reads and hashes at a time
// (the buffer stays in the CPU cache), sendChunk how much it writes to
// the connection at a time.
const (
	hashChunk = 256 << 10
	sendChunk = 1 << 20
)

// FileID derives the v2 transfer ID of a file from what changes with its
// contents short of reading them: device, inode, size and modification
// time. A partial file on the receiver resumes only under the same ID; if
// the file was rewritten with all of these kept, the trailer's SHA-256
// still catches it.
func FileID(fi os.FileInfo) string {
	var dev, ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		dev, ino = uint64(st.Dev), st.Ino
	}
	s := sha256.Sum256(fmt.Appendf(nil, "warren file drop id\x00%d\x00%d\x00%d\x00%d", dev, ino, fi.Size(), fi.ModTime().UnixNano()))
	return hex.EncodeToString(s[:IDLen/2])
}

// unchanged reports whether b describes the same version of the file as a.
func unchanged(a, b os.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// OffsetV2 asks the peer how many bytes of the file h (a v2 header) it
// holds, and whether it already waits complete there.
func (c *Client) OffsetV2(ctx context.Context, peer netip.AddrPort, h Header) (int64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURLV2(peer, h.Name)+"?"+url.Values{
		"size": {strconv.FormatInt(h.Size, 10)}, "id": {h.ID}}.Encode(), nil)
	if err != nil {
		return 0, false, err
	}
	var a offsetAnswer
	if err := c.do(req, &a); err != nil {
		return 0, false, err
	}
	if a.Offset < 0 || a.Offset > h.Size {
		return 0, false, fmt.Errorf("peer answered offset %d for a file of %d bytes", a.Offset, h.Size)
	}
	return a.Offset, a.Done, nil
}

func fileURLV2(peer netip.AddrPort, name string) string {
	return "http://" + peer.String() + "/v2/files/" + url.PathEscape(name)
}

// SendFile sends the regular file f under name (valid, see CleanName) to
// the peer: it asks for the offset, calls started with it, then sends the
// rest, hashing the file as it goes (protocol v2; a peer without v2 gets
// v1, which needs a hashing pass first). sent counts the file's bytes
// written to the connection. A broken connection leaves the receiver's
// partial file for the next SendFile to resume.
func (c *Client) SendFile(ctx context.Context, peer netip.AddrPort, name string, f *os.File, started func(off int64), sent *atomic.Int64) (*File, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	h := Header{Name: name, Size: fi.Size(), ID: FileID(fi)}
	if err := h.check(); err != nil {
		return nil, err
	}
	off, done, err := c.OffsetV2(ctx, peer, h)
	var re *RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return c.sendV1(ctx, peer, h, f, fi, started, sent)
	}
	if err != nil {
		return nil, err
	}
	started(off)
	if done {
		return &File{Name: h.Name, Size: h.Size, ID: h.ID}, nil
	}
	file, err := c.putV2(ctx, peer, h, off, f, fi, sent)
	if err != nil && !errors.As(err, &re) && !errors.Is(err, ErrChanged) && ctx.Err() == nil {
		// The receiver may have answered and hung up while we were still
		// sending (disk full): ask it why, briefly.
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, oerr := c.OffsetV2(octx, peer, h)
		cancel()
		if errors.As(oerr, &re) && !re.Retryable() {
			return nil, oerr
		}
	}
	return file, err
}

// sendV1 sends f with protocol v1: the SHA-256 first, then the bytes.
func (c *Client) sendV1(ctx context.Context, peer netip.AddrPort, h Header, f *os.File, fi os.FileInfo, started func(off int64), sent *atomic.Int64) (*File, error) {
	hs := sha256.New()
	if err := hashRange(hs, f, 0, h.Size, make([]byte, hashChunk), nil); err != nil {
		return nil, err
	}
	h.ID, h.SHA256 = "", hex.EncodeToString(hs.Sum(nil))
	off, err := c.Offset(ctx, peer, h)
	if err != nil {
		return nil, err
	}
	started(off)
	if off == h.Size && h.Size > 0 {
		return &File{Name: h.Name, Size: h.Size, SHA256: h.SHA256}, nil
	}
	return c.Put(ctx, peer, h, off, &countingReader{r: io.NewSectionReader(f, off, h.Size-off), n: sent})
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// hashRange hashes bytes [from, to) of f, unless stop is set.
func hashRange(hs hash.Hash, f *os.File, from, to int64, buf []byte, stop *atomic.Bool) error {
	pos, err := hashMapped(hs, f, from, to, stop)
	if err != nil {
		return err
	}
	for pos < to {
		if stop != nil && stop.Load() {
			return errors.New("stopped")
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), to-pos)], pos)
		hs.Write(buf[:n])
		pos += int64(n)
		if pos < to && n == 0 {
			if err == nil || err == io.EOF {
				return ErrChanged
			}
			return err
		}
	}
	return nil
}

// mapWindow is how much of a file hashMapped maps at a time.
const mapWindow = 8 << 20

// afterWindow, if not nil, runs after each window hashMapped hashed (tests).
var afterWindow func()

// hashMapped hashes bytes [from, to) of f from the page cache through
// windows of a read-only mapping of the file, which saves copying them
// as reading would. It returns how far it got: where mapping the file
// failed (file systems without mmap), for reading to go on from there.
// A file truncated meanwhile faults on the pages past its end: the
// fault panics (SetPanicOnFault) and hashMapped returns ErrChanged.
func hashMapped(hs hash.Hash, f *os.File, from, to int64, stop *atomic.Bool) (pos int64, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return from, nil
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = ErrChanged
		}
	}()
	page := int64(os.Getpagesize())
	for pos = from; pos < to; {
		if stop != nil && stop.Load() {
			return pos, errors.New("stopped")
		}
		start := pos &^ (page - 1)
		end := min(to, start+mapWindow)
		var m []byte
		var merr error
		if cerr := rc.Control(func(fd uintptr) {
			m, merr = unix.Mmap(int(fd), start, int(end-start), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		}); cerr != nil || merr != nil {
			return pos, nil
		}
		func() {
			defer unix.Munmap(m)
			hs.Write(m[pos-start:])
		}()
		pos = end
		if afterWindow != nil {
			afterWindow()
		}
	}
	return pos, nil
}

// useSendfile has writeChunk send with sendfile(2) over TCP (a
// variable, for comparing).
var useSendfile = true

// writeChunk writes bytes [pos, pos+n) of f to conn: over TCP with
// sendfile from f's pages, else through buf.
func writeChunk(conn net.Conn, f *os.File, pos, n int64, buf []byte) error {
	if tc, ok := conn.(*net.TCPConn); ok && useSendfile {
		if _, err := f.Seek(pos, io.SeekStart); err != nil {
			return err
		}
		lr := &io.LimitedReader{R: f, N: n}
		for lr.N > 0 {
			m, err := tc.ReadFrom(lr)
			if err != nil {
				return err
			}
			if m == 0 {
				return ErrChanged // shrunk
			}
		}
		return nil
	}
	m, err := f.ReadAt(buf[:n], pos)
	if m < int(n) {
		if err == nil || err == io.EOF {
			err = ErrChanged
		}
		return err
	}
	_, err = conn.Write(buf[:n])
	return err
}

// putV2 sends bytes [off, h.Size) of f and the trailer in one PUT. It
// speaks HTTP/1.1 itself to write the file in large chunks (with
// sendfile), while a goroutine of its own reads the whole file again
// (from the page cache) to hash it: hashing overlaps sending, on another
// core if there is one.
func (c *Client) putV2(ctx context.Context, peer netip.AddrPort, h Header, off int64, f *os.File, fi os.FileInfo, sent *atomic.Int64) (*File, error) {
	hs := sha256.New()
	var stopHash atomic.Bool
	hashed := make(chan error, 1)
	go func() { hashed <- hashRange(hs, f, 0, h.Size, make([]byte, hashChunk), &stopHash) }()
	hashWait := func() error {
		err := <-hashed
		hashed <- err
		return err
	}
	defer func() {
		stopHash.Store(true)
		hashWait()
	}()
	conn, err := c.dial(ctx, "tcp", peer.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fail := func(err error) (*File, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	head := fmt.Sprintf("PUT /v2/files/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: warren\r\nWarren-Size: %d\r\nWarren-Id: %s\r\nWarren-Offset: %d\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
		url.PathEscape(h.Name), peer, h.Size, h.ID, off, h.Size-off+TrailerLen)
	conn.SetWriteDeadline(time.Now().Add(c.stallTimeout()))
	if _, err := io.WriteString(conn, head); err != nil {
		return fail(err)
	}
	lim := &answerLimit{r: conn}
	br := bufio.NewReader(lim)
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := lim.readResponse(br)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusContinue {
		return fail(decodeAnswer(resp, nil))
	}
	conn.SetReadDeadline(time.Time{})
	// writeFailed returns the answer the receiver may have sent before
	// it hung up (disk full), else err.
	writeFailed := func(err error) (*File, error) {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if resp, rerr := lim.readResponse(br); rerr == nil && resp.StatusCode != http.StatusOK {
			return fail(decodeAnswer(resp, nil))
		}
		return fail(err)
	}
	var buf []byte
	if _, ok := conn.(*net.TCPConn); !ok || !useSendfile {
		buf = make([]byte, sendChunk)
	}
	for pos := off; pos < h.Size; {
		n := min(sendChunk, h.Size-pos)
		conn.SetWriteDeadline(time.Now().Add(c.stallTimeout()))
		if err := writeChunk(conn, f, pos, n, buf); err != nil {
			if errors.Is(err, ErrChanged) {
				return fail(err)
			}
			return writeFailed(err)
		}
		sent.Add(n)
		pos += n
	}
	if err := hashWait(); err != nil {
		return fail(fmt.Errorf("hash the file: %w", err))
	}
	if now, err := f.Stat(); err != nil || !unchanged(fi, now) {
		return fail(ErrChanged)
	}
	conn.SetWriteDeadline(time.Now().Add(c.stallTimeout()))
	if _, err := io.WriteString(conn, hex.EncodeToString(hs.Sum(nil))); err != nil {
		return writeFailed(err)
	}
	// The receiver syncs the file to its disk before it answers.
	conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	if resp, err = lim.readResponse(br); err != nil {
		return fail(err)
	}
	var file File
	if err := decodeAnswer(resp, &file); err != nil {
		return fail(err)
	}
	return &file, nil
}

// maxAnswer bounds what the sender reads of one answer of the receiver
// (head and JSON body): the receiver is a mesh member, not trusted to
// keep its answers small.
const maxAnswer = 16<<10 + 64<<10

// answerLimit reads at most n bytes from r, then fails; readResponse
// grants each answer its own allowance.
type answerLimit struct {
	r io.Reader
	n int
}

func (l *answerLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errAnswerTooLarge
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

var errAnswerTooLarge = errors.New("the receiver's answer (header and body) is over 80 KiB")

func (l *answerLimit) readResponse(br *bufio.Reader) (*http.Response, error) {
	l.n = maxAnswer
	resp, err := http.ReadResponse(br, nil)
	if err != nil && l.n <= 0 {
		return nil, errAnswerTooLarge
	}
	return resp, err
}
