package drop

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// DefaultQuota is the default limit on the bytes waiting in an inbox.
const DefaultQuota = 10 << 30

// Errors a transfer can end with; the peer API maps them to HTTP statuses.
var (
	ErrBusy     = errors.New("another transfer of this file is in progress")
	ErrQuota    = errors.New("the receiver's inbox quota is exceeded")
	ErrNoSpace  = errors.New("the receiver's disk is full")
	ErrHash     = errors.New("SHA-256 mismatch: the file arrived corrupted and was discarded")
	ErrOffset   = errors.New("the receiver has fewer bytes than the offset sent from")
	ErrNotFound = errors.New("no such waiting file")
	ErrTooMany  = errors.New("too many transfers in progress")
)

// Header is what a sender declares about a file before its bytes: with
// protocol v1 its SHA-256, with v2 a transfer ID instead (the SHA-256
// follows the bytes, in the trailer). Exactly one of the two is set.
type Header struct {
	Name   string // valid (see ValidName)
	Size   int64
	SHA256 string // v1: 64 lowercase hex digits
	ID     string // v2: IDLen lowercase hex digits naming this version of the file
}

// IDLen is the length of a v2 transfer ID in hex digits.
const IDLen = 32

// isLowerHex reports whether s is n lowercase hex digits.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (h Header) check() error {
	if err := ValidName(h.Name); err != nil {
		return err
	}
	if h.Size < 0 {
		return errors.New("negative size")
	}
	switch {
	case h.SHA256 != "" && h.ID != "":
		return errors.New("both a SHA-256 and a transfer ID")
	case h.ID != "":
		if !isLowerHex(h.ID, IDLen) {
			return fmt.Errorf("transfer ID must be %d lowercase hex digits", IDLen)
		}
	case !isLowerHex(h.SHA256, 64):
		return errors.New("SHA-256 must be 64 lowercase hex digits")
	}
	return nil
}

// Sender identifies who sent a file.
type Sender struct {
	Name string `json:"name"` // node name
	User string `json:"user"`
	Addr string `json:"addr"` // tunnel address
}

// File is a finished file waiting in the inbox.
type File struct {
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	From     Sender    `json:"from"`
	Received time.Time `json:"received"`
	ID       string    `json:"id,omitempty"` // v2 transfer ID it was sent with
}

// partialInfo is the metadata kept next to a partial file.
type partialInfo struct {
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`       // v1: declared up front
	ID         string `json:"id,omitempty"` // v2
	From       Sender `json:"from"`
	Started    time.Time
	HashOffset int64  `json:"hashOffset"` // bytes HashState covers
	HashState  []byte `json:"hashState,omitempty"`
}

// matches reports whether the partial is of the file h from sender from:
// v1 by size and declared SHA-256 (which covers the content, whoever
// sent it), v2 by size, transfer ID and sender.
func (pi *partialInfo) matches(h Header, from Sender) bool {
	if pi.Size != h.Size {
		return false
	}
	if h.ID != "" {
		return pi.ID == h.ID && pi.From.Addr == from.Addr
	}
	return pi.ID == "" && pi.SHA256 == h.SHA256
}

// sameFile reports whether the finished file f is h sent by from.
func (f *File) sameFile(h Header, from Sender) bool {
	if f.Size != h.Size {
		return false
	}
	if h.ID != "" {
		return f.ID == h.ID && f.From.Addr == from.Addr
	}
	return f.SHA256 == h.SHA256
}

// Inbox is the directory received files wait in until `warren file get`.
type Inbox struct {
	dir   string
	quota int64

	mu     sync.Mutex
	active map[string]*transfer // by file name
	failed map[string]failure   // recent transfers that ran out of space

	received atomic.Int64 // bytes written by Receive since NewInbox

	// qmu serialises quota checks with the reservations they make:
	// reserved holds the declared size of each upload in progress, by
	// file name (it covers that file's partial bytes on disk).
	qmu      sync.Mutex
	reserved map[string]int64
}

// failure remembers why a transfer failed after the sender may have
// stopped listening, to tell it when it asks for the offset again (for 30
// s, so that both the sending daemon and the CLI behind it learn it).
type failure struct {
	h   Header
	err error
	at  time.Time
}

type transfer struct {
	from     string // sender address
	upload   bool   // counts against the transfer caps
	reserved bool   // holds a quota reservation
	cancel   func() // aborts the transfer (closes its connection)
	done     chan struct{}
}

// NewInbox opens (creating it 0700) the inbox directory dir with a quota of
// waiting bytes (DefaultQuota if 0), and removes partial files untouched
// for a week.
func NewInbox(dir string, quota int64) (*Inbox, error) {
	if quota <= 0 {
		quota = DefaultQuota
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	in := &Inbox{dir: dir, quota: quota, active: map[string]*transfer{}, failed: map[string]failure{}, reserved: map[string]int64{}}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n, ok := partialName(e.Name()); ok {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > 7*24*time.Hour {
				in.removePartial(n)
			}
		}
	}
	return in, nil
}

// Dir returns the inbox directory.
func (in *Inbox) Dir() string { return in.dir }

// Received returns the bytes of file data written since the inbox opened.
func (in *Inbox) Received() int64 { return in.received.Load() }

func (in *Inbox) path(name string) string     { return filepath.Join(in.dir, name) }
func (in *Inbox) infoPath(name string) string { return filepath.Join(in.dir, "."+name+".info") }
func (in *Inbox) partPath(name string) string { return filepath.Join(in.dir, "."+name+".partial") }
func (in *Inbox) partInfoPath(name string) string {
	return filepath.Join(in.dir, "."+name+".partial.info")
}

// partialName returns NAME for ".NAME.partial".
func partialName(f string) (string, bool) {
	if !strings.HasPrefix(f, ".") || !strings.HasSuffix(f, ".partial") {
		return "", false
	}
	return f[1 : len(f)-len(".partial")], true
}

func (in *Inbox) removePartial(name string) {
	os.Remove(in.partPath(name))
	os.Remove(in.partInfoPath(name))
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// abortGrace is how long begin lets a transfer it supersedes end by
// itself.
const abortGrace = 300 * time.Millisecond

// begin registers a transfer of name from sender addr. A transfer of the
// same file from the same sender still running (its connection broke
// without the receiver noticing) is aborted, if it does not end within
// abortGrace, and waited for; one from
// another sender makes begin fail with ErrBusy. An upload beyond the
// transfer caps fails with ErrTooMany.
func (in *Inbox) begin(name, from string, cancel func(), upload bool) (*transfer, error) {
	for {
		in.mu.Lock()
		old := in.active[name]
		if old == nil {
			if upload {
				if err := in.capsLocked(from); err != nil {
					in.mu.Unlock()
					return nil, err
				}
			}
			t := &transfer{from: from, upload: upload, cancel: cancel, done: make(chan struct{})}
			in.active[name] = t
			in.mu.Unlock()
			return t, nil
		}
		in.mu.Unlock()
		if old.from != from {
			return nil, ErrBusy
		}
		// A sender that hung up (and asks again at once) may have bytes
		// still on their way through our socket: let the old transfer
		// write them and end before aborting it.
		select {
		case <-old.done:
			continue
		case <-time.After(abortGrace):
		}
		old.cancel()
		select {
		case <-old.done:
		case <-time.After(10 * time.Second):
			return nil, ErrBusy
		}
	}
}

func (in *Inbox) end(name string, t *transfer) {
	if t.reserved {
		in.qmu.Lock()
		delete(in.reserved, name)
		in.qmu.Unlock()
	}
	in.mu.Lock()
	if in.active[name] == t {
		delete(in.active, name)
	}
	in.mu.Unlock()
	close(t.done)
}

// Offset returns how many bytes of the file h the inbox already holds from
// sender: the size of a partial file of the same size and SHA-256 (v1) or
// transfer ID and sender (v2), h.Size and done if the same file already
// waits complete, else 0. A stale transfer of it from the same sender is
// aborted first. It fails if the rest could not be accepted (quota, free
// space).
func (in *Inbox) Offset(h Header, from Sender) (off int64, done bool, err error) {
	if err := h.check(); err != nil {
		return 0, false, err
	}
	t, err := in.begin(h.Name, from.Addr, func() {}, false)
	if err != nil {
		return 0, false, err
	}
	defer in.end(h.Name, t)
	in.mu.Lock()
	fl, ok := in.failed[h.Name]
	if ok && (fl.h != h || time.Since(fl.at) > 30*time.Second) {
		delete(in.failed, h.Name)
		ok = false
	}
	in.mu.Unlock()
	if ok {
		return 0, false, fl.err
	}
	var f File
	if readJSON(in.infoPath(h.Name), &f) == nil && f.sameFile(h, from) {
		if fi, err := os.Stat(in.path(h.Name)); err == nil && fi.Size() == h.Size {
			return h.Size, true, nil
		}
	}
	off = in.partialOffset(h, from)
	in.qmu.Lock()
	defer in.qmu.Unlock()
	return off, false, in.roomLocked(h, off)
}

// partialOffset is the length of a partial file of h from sender from, 0
// if none.
func (in *Inbox) partialOffset(h Header, from Sender) int64 {
	var pi partialInfo
	if readJSON(in.partInfoPath(h.Name), &pi) != nil || !pi.matches(h, from) {
		return 0
	}
	fi, err := os.Stat(in.partPath(h.Name))
	if err != nil {
		return 0
	}
	return min(fi.Size(), h.Size)
}

// Receive writes the bytes of h from offset off, read from body, into the
// partial file; once all h.Size bytes are there and their SHA-256 is
// h.SHA256 (v1), or the one in the TrailerLen-byte trailer that follows
// them in body (v2, see ParseTrailer), it moves the file into place and
// returns it. cancel aborts the
// transfer (a newer one of the same file from the same sender calls it);
// progress, if not nil, is called after each write. If body ends early the
// partial file stays for a later Receive from where it stopped; on a
// full disk or a hash mismatch it is removed.
func (in *Inbox) Receive(h Header, off int64, body io.Reader, from Sender, cancel func(), progress func()) (*File, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	if off < 0 || off > h.Size {
		return nil, fmt.Errorf("offset %d outside 0..%d", off, h.Size)
	}
	t, err := in.begin(h.Name, from.Addr, cancel, true)
	if err != nil {
		return nil, err
	}
	defer in.end(h.Name, t)
	if err := in.reserve(h, off, t); err != nil {
		return nil, err
	}
	hs := sha256.New()
	var pi partialInfo
	var f *os.File
	if off == 0 {
		in.removePartial(h.Name)
		pi = partialInfo{Size: h.Size, SHA256: h.SHA256, ID: h.ID, From: from, Started: time.Now()}
		if err := writeJSON(in.partInfoPath(h.Name), pi); err != nil {
			in.removePartial(h.Name)
			return nil, diskErr(err)
		}
		f, err = os.OpenFile(in.partPath(h.Name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			in.removePartial(h.Name)
			return nil, diskErr(err)
		}
	} else {
		if in.partialOffset(h, from) < off {
			return nil, ErrOffset
		}
		readJSON(in.partInfoPath(h.Name), &pi)
		if f, err = os.OpenFile(in.partPath(h.Name), os.O_RDWR, 0o600); err != nil {
			return nil, diskErr(err)
		}
		if err := resumeHash(hs, f, off, &pi); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Truncate(off); err != nil {
			f.Close()
			return nil, diskErr(err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	pi.HashState, pi.HashOffset = nil, 0
	// Until the transfer ends the info names no hash state, so a crash
	// leaves a partial whose hash is recomputed from the disk.
	writeJSON(in.partInfoPath(h.Name), pi)

	// Bytes go to the disk with direct I/O where the file system has it:
	// no copy into the page cache (and no writeback) on our CPU.
	dio, derr := os.OpenFile(in.partPath(h.Name), os.O_WRONLY|unix.O_DIRECT, 0)
	if derr != nil {
		dio = nil
	}
	n, err := in.copy(f, dio, off, hs, body, h.Size-off, progress)
	if dio != nil {
		dio.Close()
	}
	written := off + n
	if err == nil && h.ID != "" {
		var tr [TrailerLen]byte
		if _, err = io.ReadFull(body, tr[:]); err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			if h.SHA256, err = ParseTrailer(tr[:]); err != nil {
				f.Close()
				in.removePartial(h.Name)
				return nil, fmt.Errorf("%w (%v)", ErrHash, err)
			}
		}
	}
	if err != nil {
		f.Close()
		if isNoSpace(err) {
			in.removePartial(h.Name)
			err := fmt.Errorf("%w (after %d of %d bytes; the partial file was removed)", ErrNoSpace, written, h.Size)
			in.mu.Lock()
			in.failed[h.Name] = failure{h, err, time.Now()}
			in.mu.Unlock()
			return nil, err
		}
		if st, merr := hs.(encoding.BinaryMarshaler).MarshalBinary(); merr == nil {
			pi.HashState, pi.HashOffset = st, written
			writeJSON(in.partInfoPath(h.Name), pi)
		}
		return nil, fmt.Errorf("transfer interrupted after %d of %d bytes (kept for resuming): %w", written, h.Size, err)
	}
	if got := hex.EncodeToString(hs.Sum(nil)); got != h.SHA256 {
		f.Close()
		in.removePartial(h.Name)
		return nil, ErrHash
	}
	if err := f.Sync(); err != nil {
		f.Close()
		in.removePartial(h.Name)
		return nil, diskErr(err)
	}
	f.Close()
	return in.finish(h, from)
}

// finish moves a verified partial file into place under a free name.
func (in *Inbox) finish(h Header, from Sender) (*File, error) {
	name := h.Name
	for i := 1; ; i++ {
		var old File
		_, err := os.Lstat(in.path(name))
		if os.IsNotExist(err) {
			break
		}
		if readJSON(in.infoPath(name), &old) == nil && old.SHA256 == h.SHA256 && old.Size == h.Size {
			break // the same file again: replace it
		}
		if i > 999 {
			return nil, fmt.Errorf("too many waiting files named %q", h.Name)
		}
		name = Numbered(h.Name, i)
	}
	f := &File{Name: name, Size: h.Size, SHA256: h.SHA256, From: from, Received: time.Now().UTC(), ID: h.ID}
	if err := writeJSON(in.infoPath(name), f); err != nil {
		in.removePartial(h.Name)
		return nil, diskErr(err)
	}
	if err := os.Rename(in.partPath(h.Name), in.path(name)); err != nil {
		os.Remove(in.infoPath(name))
		return nil, err
	}
	os.Remove(in.partInfoPath(h.Name))
	return f, nil
}

// Numbered returns "stem (i).ext" for name "stem.ext", kept valid.
func Numbered(name string, i int) string {
	ext := filepath.Ext(name)
	if len(ext) > 16 || ext == name {
		ext = ""
	}
	stem := strings.TrimSuffix(name, ext)
	suffix := fmt.Sprintf(" (%d)%s", i, ext)
	for len(stem)+len(suffix) > MaxNameLen {
		_, size := utf8.DecodeLastRuneInString(stem)
		stem = stem[:len(stem)-size]
	}
	return stem + suffix
}

// List returns the waiting files, oldest first.
func (in *Inbox) List() ([]File, error) {
	ents, err := os.ReadDir(in.dir)
	if err != nil {
		return nil, err
	}
	files := []File{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		var f File
		if readJSON(in.infoPath(e.Name()), &f) != nil {
			f = File{Received: fi.ModTime().UTC()}
		}
		f.Name, f.Size = e.Name(), fi.Size()
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Received.Before(files[j].Received) })
	return files, nil
}

// Open opens a waiting file for reading.
func (in *Inbox) Open(name string) (*os.File, error) {
	if ValidName(name) != nil {
		return nil, ErrNotFound
	}
	f, err := os.Open(in.path(name))
	if os.IsNotExist(err) {
		return nil, ErrNotFound
	}
	return f, err
}

// Remove deletes a waiting file.
func (in *Inbox) Remove(name string) error {
	if ValidName(name) != nil {
		return ErrNotFound
	}
	err := os.Remove(in.path(name))
	if os.IsNotExist(err) {
		return ErrNotFound
	}
	os.Remove(in.infoPath(name))
	return err
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func diskErr(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w (%v)", ErrNoSpace, err)
	}
	return err
}
