package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/drop"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
)

// File drop (package drop): the daemon keeps the inbox in STATEDIR/files,
// serves the peer API on each of the node's tunnel addresses while it has
// a map, tells the peer API who owns an address (from the map: only a
// current peer's own addresses, which the engine source-checks), and
// serves the CLI's `warren file` requests. To send, the CLI opens the file
// as its user and passes the descriptor over the local API socket; the
// daemon reads the file through it, hashing and sending in one pass.

// envDropQuota sets the inbox quota (bytes, or with a K, M, G or T suffix).
const envDropQuota = "WARREN_DROP_QUOTA"

// envDropStall shortens how long a send waits on a path that stopped
// taking bytes before it resumes (default drop.DefaultStallTimeout; for tests).
const envDropStall = "WARREN_DROP_STALL"

var _ localapi.FileBackend = (*Daemon)(nil)

// dropState is the daemon's file drop; its zero value is ready.
type dropState struct {
	once   sync.Once
	inbox  *drop.Inbox
	srv    *drop.Server
	client *drop.Client
	err    error

	mu  sync.Mutex
	hs  *http.Server
	lns map[netip.Addr]net.Listener
}

// parseSize reads a byte count such as 10G or 512M (binary units).
func parseSize(s string) (int64, error) {
	s = strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB")
	s = strings.TrimSuffix(s, "B")
	mult := int64(1)
	if i := strings.IndexAny(s, "KMGT"); i >= 0 && i == len(s)-1 {
		mult = 1 << (10 * (1 + strings.IndexByte("KMGT", s[i])))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// drop returns the file drop state, opening the inbox the first time.
func (d *Daemon) dropper() (*dropState, error) {
	ds := &d.drop
	ds.once.Do(func() {
		var quota int64
		if q := os.Getenv(envDropQuota); q != "" {
			if quota, ds.err = parseSize(q); ds.err != nil {
				ds.err = fmt.Errorf("%s: %w", envDropQuota, ds.err)
				return
			}
		}
		ds.inbox, ds.err = drop.NewInbox(filepath.Join(d.cfg.StateDir, "files"), quota)
		if ds.err != nil {
			return
		}
		ds.srv = &drop.Server{Inbox: ds.inbox, Whois: d.dropWhois, Owner: d.dropOwner, Names: d.dropNames, Transfer: func() func() { return d.procs.begin() },
			Logger: d.log}
		ds.client = drop.NewClient(d.dropDial())
		if st := os.Getenv(envDropStall); st != "" {
			if v, err := time.ParseDuration(st); err == nil && v > 0 {
				ds.client.SetStallTimeout(v)
			}
		}
		ds.lns = map[netip.Addr]net.Listener{}
	})
	return ds, ds.err
}

// dropWhois names the peer owning tunnel address a.
func (d *Daemon) dropWhois(a netip.Addr) (name, user string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil {
		return "", "", false
	}
	self, now := d.nodeKey(), time.Now()
	for i := range d.nm.Peers {
		p := &d.nm.Peers[i]
		if !usable(p, self, now) {
			continue
		}
		for _, pa := range p.Addresses {
			if pa.Addr() == a {
				if p.IsTagged() {
					return p.Name, "", true // owned by its tags: no user's own machine
				}
				return p.Name, p.User, true
			}
		}
	}
	return "", "", false
}

// dropNames are the host names the peer API answers to besides the
// node's addresses: its MagicDNS name, short and qualified.
func (d *Daemon) dropNames() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil || d.nm.Self.Name == "" {
		return nil
	}
	names := []string{d.nm.Self.Name}
	if d.nm.Domain != "" {
		names = append(names, d.nm.Self.Name+"."+d.nm.Domain)
	}
	return names
}

func (d *Daemon) dropOwner() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil || d.nm.Self.IsTagged() {
		return ""
	}
	return d.nm.Self.User
}

// dropMapLocked makes the peer API listen on exactly the tunnel addresses
// of nm (none when nm is nil); d.mu held. Called at the end of
// applyMapLocked and clearMapLocked.
func (d *Daemon) dropMapLocked(nm *netmap.NetworkMap) {
	ds, err := d.dropper()
	if err != nil {
		d.log.Error("file drop disabled", "err", err)
		return
	}
	want := map[netip.Addr]bool{}
	if nm != nil {
		for _, a := range nm.Self.Addresses {
			want[a.Addr()] = true
		}
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for a, ln := range ds.lns {
		if !want[a] {
			ln.Close()
			delete(ds.lns, a)
		}
	}
	for a := range want {
		if ds.lns[a] != nil {
			continue
		}
		ln, err := d.listenTunnel(a)
		if err != nil {
			d.log.Error("file drop: cannot listen", "addr", a, "err", err)
			continue
		}
		if ds.hs == nil {
			ds.hs = ds.srv.HTTPServer()
		}
		ds.lns[a] = ln
		go ds.hs.Serve(ln)
		d.log.Debug("file drop: peer API listening", "addr", ln.Addr().String())
	}
}

// listenTunnel listens on a's peer API port, bound to the tunnel
// interface so that only packets that came through the engine reach it
// (not ones from another interface or a local process claiming a tunnel
// address).
func (d *Daemon) listenTunnel(a netip.Addr) (net.Listener, error) {
	if tl, ok := d.router.(tunnelListener); ok {
		return tl.ListenTunnel(drop.PeerAddr(a))
	}
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.BindToDevice(int(fd), d.cfg.TUN)
			if serr == nil && a.Is6() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
			} else if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", drop.PeerAddr(a).String())
}

// stopDrop closes the peer API and its connections (daemon shutdown).
func (d *Daemon) stopDrop() {
	ds := &d.drop
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.hs != nil {
		ds.hs.Close()
		ds.hs = nil
	}
	for a, ln := range ds.lns {
		ln.Close()
		delete(ds.lns, a)
	}
}

// FileHandler serves /localapi/v1/file/ for the CLI.
func (d *Daemon) FileHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /localapi/v1/file/send", d.serveFileSend)
	mux.HandleFunc("GET /localapi/v1/file/list", d.serveFileList)
	mux.HandleFunc("GET /localapi/v1/file/files/{name}", d.serveFileGet)
	mux.HandleFunc("DELETE /localapi/v1/file/files/{name}", d.serveFileDelete)
	return mux
}

func fileError(w http.ResponseWriter, code int, err error, retry bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(localapi.FileError{Msg: err.Error(), Retry: retry})
}

// relayError answers with a peer's refusal, or a retryable network error.
func relayError(peer string, ip netip.Addr, err error) (code int, msg string, retry bool) {
	var re *drop.RemoteError
	switch {
	case errors.As(err, &re):
		return re.Status, fmt.Sprintf("%s: %s", peer, re.Msg), re.Retryable()
	case errors.Is(err, drop.ErrChanged):
		return http.StatusConflict, err.Error(), false
	}
	return http.StatusBadGateway, fmt.Sprintf("cannot reach %s's file drop at %s: %v", peer, drop.PeerAddr(ip), err), true
}

// serveFileSend sends the file passed as a descriptor (see
// localapi.FileSendEvent for the answer).
func (d *Daemon) serveFileSend(w http.ResponseWriter, r *http.Request) {
	f := localapi.ReceivedFile(r)
	if f == nil {
		fileError(w, http.StatusBadRequest, errors.New("no file descriptor came with the request"), false)
		return
	}
	defer f.Close()
	defer d.procs.begin()()
	var req localapi.FileSendRequest
	// Read the body to its end, so that the request's context ends when
	// the CLI goes away.
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err != nil {
		fileError(w, http.StatusBadRequest, fmt.Errorf("bad request: %v", err), false)
		return
	}
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE == unix.O_WRONLY {
		fileError(w, http.StatusBadRequest, errors.New("the file passed is not open for reading"), false)
		return
	}
	ds, err := d.dropper()
	if err != nil {
		fileError(w, http.StatusInternalServerError, err, false)
		return
	}
	d.mu.Lock()
	nm := d.nm
	d.mu.Unlock()
	if nm == nil {
		fileError(w, http.StatusBadRequest, errors.New("this node is not on the mesh (run `warren up`)"), false)
		return
	}
	p, ip, err := resolvePeer(nm, req.Peer)
	if err != nil {
		fileError(w, http.StatusBadRequest, err, false)
		return
	}
	if err := drop.ValidName(req.Name); err != nil {
		fileError(w, http.StatusBadRequest, err, false)
		return
	}
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var sent atomic.Int64
	var from int64
	started := false
	tick := make(chan struct{})
	ticked := make(chan struct{})
	start := time.Now()
	file, err := ds.client.SendFile(r.Context(), drop.PeerAddr(ip), req.Name, f, func(off int64) {
		from, started = off, true
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc.Encode(localapi.FileSendEvent{Start: &localapi.FileOffset{Offset: off, Peer: p.Name, Addr: ip}})
		rc.Flush()
		go func() {
			defer close(ticked)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-tick:
					return
				case <-t.C:
					enc.Encode(localapi.FileSendEvent{Sent: sent.Load()})
					rc.Flush()
				}
			}
		}()
	}, &sent)
	if started {
		close(tick)
		<-ticked
	}
	if err != nil {
		d.log.Info("file drop: send failed", "file", req.Name, "peer", p.Name, "offset", from, "sent", sent.Load(), "err", err)
		code, msg, retry := relayError(p.Name, ip, err)
		if !started {
			fileError(w, code, errors.New(msg), retry)
			return
		}
		enc.Encode(localapi.FileSendEvent{Err: msg, Retry: retry})
		return
	}
	el := time.Since(start)
	d.log.Info("file drop: sent", "file", req.Name, "peer", p.Name, "size", file.Size, "from", from,
		"seconds", el.Seconds(), "MBps", float64(sent.Load())/el.Seconds()/1e6)
	enc.Encode(localapi.FileSendEvent{Sent: sent.Load(), Done: &localapi.WaitingFile{Name: file.Name, Size: file.Size, SHA256: file.SHA256,
		From: file.From.Name, FromUser: file.From.User, Received: file.Received}})
}

func writeFileJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (d *Daemon) serveFileList(w http.ResponseWriter, r *http.Request) {
	ds, err := d.dropper()
	if err != nil {
		fileError(w, http.StatusInternalServerError, err, false)
		return
	}
	files, err := ds.inbox.List()
	if err != nil {
		fileError(w, http.StatusInternalServerError, err, false)
		return
	}
	l := localapi.FileList{Files: []localapi.WaitingFile{}, ReceivedBytes: ds.inbox.Received()}
	for _, f := range files {
		l.Files = append(l.Files, localapi.WaitingFile{Name: f.Name, Size: f.Size, SHA256: f.SHA256, From: f.From.Name, FromUser: f.From.User, Received: f.Received})
	}
	writeFileJSON(w, l)
}

func (d *Daemon) serveFileGet(w http.ResponseWriter, r *http.Request) {
	ds, err := d.dropper()
	if err != nil {
		fileError(w, http.StatusInternalServerError, err, false)
		return
	}
	f, err := ds.inbox.Open(r.PathValue("name"))
	if err != nil {
		fileError(w, http.StatusNotFound, fmt.Errorf("%q: %v", r.PathValue("name"), err), false)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
}

func (d *Daemon) serveFileDelete(w http.ResponseWriter, r *http.Request) {
	ds, err := d.dropper()
	if err != nil {
		fileError(w, http.StatusInternalServerError, err, false)
		return
	}
	if err := ds.inbox.Remove(r.PathValue("name")); err != nil {
		fileError(w, http.StatusNotFound, fmt.Errorf("%q: %v", r.PathValue("name"), err), false)
		return
	}
	writeFileJSON(w, struct{}{})
}
