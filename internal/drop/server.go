// Package drop owns file drop, Warren's way of sending files between the
// machines of a warren: the peer API a node serves to the other nodes (HTTP
// on TCP port PeerAPIPort, bound to each of its tunnel addresses and to the
// tunnel interface, so that only packets the WireGuard engine decrypted and
// source-checked can reach it: a connection's source address is the
// authenticated identity of the sending node), the inbox where received
// files wait (a directory under the daemon's state; partial files are kept
// as hidden ".NAME.partial" files with a ".NAME.partial.info" beside them,
// so a transfer resumes from the received offset even across restarts,
// and become "NAME" only once their SHA-256 matches the one the sender
// declared; a quota bounds the waiting bytes), the sanitising of file
// names (CleanName for senders, ValidName which the receiver enforces), and
// the sender's side of the protocol (Client).
//
// Protocol v2 (peer API, under /v2/files/NAME, NAME path-escaped), which
// senders use; the SHA-256 follows the bytes, so that a sender hashes the
// file while sending it rather than in a pass of its own before:
//
//	GET /v2/files/NAME?size=N&id=ID → {"offset": N, "done": bool}
//	PUT /v2/files/NAME  Warren-Size, Warren-Id, Warren-Offset headers,
//	                    body = the bytes from the offset, then the trailer:
//	                    the SHA-256 of the whole file, 64 lowercase hex
//	                    digits (Content-Length = size - offset + 64)  → File
//
// ID (IDLen hex digits) names the version of the file being sent (the
// sender derives it from the file's identity, size and modification time,
// see FileID): a partial file resumes only for the same name, size, ID and
// sending node. On a resume the receiver hashes the prefix it holds (or
// restores the hash state it saved when the connection broke) and the
// sender hashes its own prefix, so the trailer still covers every byte.
// done says the same file already waits complete; offset = size without
// done means only the trailer is missing.
//
// Protocol v1 (still served, and used by senders whose peer answers v2
// with 404) declares the SHA-256 up front:
//
//	GET /v1/files/NAME?size=N&sha256=HEX → {"offset": N}  bytes the receiver holds
//	PUT /v1/files/NAME  Warren-Size, Warren-Sha256, Warren-Offset headers,
//	                    body = the bytes from the offset  → File
//
// Errors are {"error": "one line"} with 400 (bad name or header), 403
// (sender unknown, of another user, or tagged, or the receiver tagged:
// only untagged nodes of the receiving node's user may send, and only to
// an untagged node; tagged nodes belong to their tags, not to a user), 409 (busy, offset mismatch), 413 (quota), 422 (hash
// mismatch, bad trailer), 429 (too many transfers in progress: see
// MaxTransfersPerSender, MaxTransfers), 507 (disk full). The sender asks for the offset,
// then streams from it; a broken connection is retried by asking again, so
// no byte that reached the receiver's disk is sent twice.
package drop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// PeerAPIPort is the TCP port of the peer API on tunnel addresses.
const PeerAPIPort = 41642

// IdleTimeout ends a transfer whose sender sent nothing for this long.
const IdleTimeout = 30 * time.Second

// Server is the peer API of one node.
type Server struct {
	Inbox *Inbox
	// Whois names the node and user that own a tunnel address; ok is
	// false for addresses that belong to no peer. user is "" for a tagged
	// node: it is owned by its tags, not by the user who made its key,
	// so it is no user's own machine.
	Whois func(netip.Addr) (name, user string, ok bool)
	// Owner returns the user of this node, "" if it is tagged (or not on
	// the mesh): only untagged nodes of the same user may send, and only
	// to an untagged node.
	Owner func() string
	// Transfer, if not nil, is called when an upload from an
	// authenticated sender with a valid header starts; the function it
	// returns is called when the upload ends. (The daemon runs on more Ps
	// during transfers: never for a request it has not authenticated.)
	Transfer func() (end func())
	// Names, if set, returns the host names this node answers to besides
	// its addresses (its MagicDNS names).
	Names func() []string
	// Logger gets refusals (warning), failed and finished transfers;
	// nil discards.
	Logger *slog.Logger
}

type connKey struct{}

// ConnContext stores a request's connection in its context so that a
// superseding transfer can abort it; use it as http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// HTTPServer returns an http.Server for the peer API: Handler behind the
// Host and cross-origin checks of package httpguard (a web page on one of
// the user's machines that rebinds a name to this node's tunnel address
// would otherwise push files as that machine: only IP literals and the
// node's own names are served).
func (s *Server) HTTPServer() *http.Server {
	h := httpguard.Wrap(s.Handler(), httpguard.Policy{Also: s.ownName, Logger: s.Logger})
	return &http.Server{Handler: h, ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
}

// ownName reports whether name (normalised) is one of s.Names.
func (s *Server) ownName(name string) bool {
	if s.Names == nil {
		return false
	}
	for _, n := range s.Names() {
		if httpguard.Hostname(n) == name {
			return true
		}
	}
	return false
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Handler serves the peer API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/files/{name}", s.serveOffset)
	mux.HandleFunc("PUT /v1/files/{name}", s.servePut)
	mux.HandleFunc("GET /v2/files/{name}", s.serveOffset)
	mux.HandleFunc("PUT /v2/files/{name}", s.servePut)
	return mux
}

// sender identifies and authorises the request's sender.
func (s *Server) sender(w http.ResponseWriter, r *http.Request) (Sender, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		writeError(w, http.StatusForbidden, errors.New("refused: unknown sender"))
		return Sender{}, false
	}
	a := ap.Addr().Unmap()
	name, user, ok := s.Whois(a)
	if !ok {
		s.log().Warn("file drop: refused: not a peer", "from", a)
		writeError(w, http.StatusForbidden, fmt.Errorf("refused: %s is not a node of this warren", a))
		return Sender{}, false
	}
	owner := s.Owner()
	if owner == "" {
		s.log().Warn("file drop: refused: this node is tagged", "sender", name, "from", a)
		writeError(w, http.StatusForbidden, errors.New("refused: this node is tagged (owned by its tags, not by a user); file drop works only between one user's own untagged machines"))
		return Sender{}, false
	}
	if user == "" {
		s.log().Warn("file drop: refused: a tagged node", "sender", name, "from", a)
		writeError(w, http.StatusForbidden, fmt.Errorf("refused: node %s is a tagged node (owned by its tags, not by a user); only %s's own machines may send files here", name, owner))
		return Sender{}, false
	}
	if user != owner {
		s.log().Warn("file drop: refused: another user's node", "sender", name, "from", a, "user", user, "owner", owner)
		writeError(w, http.StatusForbidden, fmt.Errorf("refused: node %s belongs to user %s; only %s's machines may send files here", name, user, owner))
		return Sender{}, false
	}
	return Sender{Name: name, User: user, Addr: a.String()}, true
}

// ParseHeader reads a file header from a name and the textual size and
// SHA-256; it is the peer API's only parser of sender input besides the
// name (checked with ValidName).
func ParseHeader(name, size, sum string) (Header, error) {
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 {
		return Header{}, fmt.Errorf("bad size %q", size)
	}
	h := Header{Name: name, Size: n, SHA256: sum}
	return h, h.check()
}

// ParseHeaderV2 reads a protocol v2 file header from a name and the
// textual size and transfer ID.
func ParseHeaderV2(name, size, id string) (Header, error) {
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 {
		return Header{}, fmt.Errorf("bad size %q", size)
	}
	if id == "" {
		return Header{}, errors.New("missing transfer ID")
	}
	h := Header{Name: name, Size: n, ID: id}
	return h, h.check()
}

// TrailerLen is the length of the v2 trailer: the SHA-256 in hex.
const TrailerLen = 64

// ParseTrailer reads the SHA-256 a v2 sender put after the bytes.
func ParseTrailer(b []byte) (string, error) {
	if !isLowerHex(string(b), TrailerLen) {
		return "", fmt.Errorf("bad trailer %q: want the SHA-256 as %d lowercase hex digits", b, TrailerLen)
	}
	return string(b), nil
}

// v2 reports whether r is a request of protocol v2.
func v2(r *http.Request) bool { return len(r.URL.Path) > 3 && r.URL.Path[:4] == "/v2/" }

func (s *Server) serveOffset(w http.ResponseWriter, r *http.Request) {
	from, ok := s.sender(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var h Header
	var err error
	if v2(r) {
		h, err = ParseHeaderV2(r.PathValue("name"), q.Get("size"), q.Get("id"))
	} else {
		h, err = ParseHeader(r.PathValue("name"), q.Get("size"), q.Get("sha256"))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	off, done, err := s.Inbox.Offset(h, from)
	if err != nil {
		writeError(w, errStatus(err), err)
		return
	}
	if !v2(r) {
		done = false // v1 senders take offset = size as done
	}
	writeJSONResp(w, http.StatusOK, offsetAnswer{Offset: off, Done: done})
}

type offsetAnswer struct {
	Offset int64 `json:"offset"`
	Done   bool  `json:"done,omitempty"` // v2
}

func (s *Server) servePut(w http.ResponseWriter, r *http.Request) {
	from, ok := s.sender(w, r)
	if !ok {
		return
	}
	var h Header
	var err error
	var trailer int64
	if v2(r) {
		h, err = ParseHeaderV2(r.PathValue("name"), r.Header.Get("Warren-Size"), r.Header.Get("Warren-Id"))
		trailer = TrailerLen
	} else {
		h, err = ParseHeader(r.PathValue("name"), r.Header.Get("Warren-Size"), r.Header.Get("Warren-Sha256"))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	off, err := strconv.ParseInt(r.Header.Get("Warren-Offset"), 10, 64)
	if err != nil || off < 0 || off > h.Size {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad offset %q", r.Header.Get("Warren-Offset")))
		return
	}
	if r.ContentLength != h.Size-off+trailer {
		writeError(w, http.StatusBadRequest, fmt.Errorf("body of %d bytes, want %d", r.ContentLength, h.Size-off+trailer))
		return
	}
	if s.Transfer != nil {
		defer s.Transfer()()
	}
	rc := http.NewResponseController(w)
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	cancel := func() {
		if conn != nil {
			conn.Close()
		}
	}
	rc.SetReadDeadline(time.Now().Add(IdleTimeout))
	start := time.Now()
	f, err := s.Inbox.Receive(h, off, r.Body, from, cancel, func() { rc.SetReadDeadline(time.Now().Add(IdleTimeout)) })
	if err != nil {
		s.log().Warn("file drop: receive failed", "file", h.Name, "sender", from.Name, "err", err)
		writeError(w, errStatus(err), err)
		return
	}
	el := time.Since(start)
	s.log().Info("file drop: received", "file", f.Name, "bytes", f.Size, "sent", h.Size-off,
		"in", el.Round(time.Millisecond), "MB/s", fmt.Sprintf("%.1f", float64(h.Size-off)/el.Seconds()/1e6), "sender", from.Name)
	writeJSONResp(w, http.StatusOK, f)
}

func errStatus(err error) int {
	switch {
	case errors.Is(err, ErrBusy), errors.Is(err, ErrOffset):
		return http.StatusConflict
	case errors.Is(err, ErrQuota):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrHash):
		return http.StatusUnprocessableEntity
	}
	return http.StatusBadRequest
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSONResp(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSONResp(w, code, errorBody{Error: err.Error()})
}

// RemoteError is an error answer of a peer's API.
type RemoteError struct {
	Status int
	Msg    string
}

func (e *RemoteError) Error() string { return e.Msg }

// Retryable reports whether asking again may succeed.
func (e *RemoteError) Retryable() bool {
	return e.Status == http.StatusConflict || e.Status == http.StatusTooManyRequests ||
		e.Status >= 500 && e.Status != http.StatusInsufficientStorage
}

// Client sends files to peers' APIs.
type Client struct {
	hc   *http.Client
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// stall ends a send whose bytes the network stopped taking
	// (DefaultStallTimeout unless SetStallTimeout changed it).
	stall atomic.Int64
}

// DefaultStallTimeout ends a send whose bytes the network stopped taking.
// Each Client has its own (SetStallTimeout), so that several nodes in one
// process do not share it.
const DefaultStallTimeout = 10 * time.Second

// SetStallTimeout changes how long a send waits on a path that stopped
// taking bytes before it fails (and can be resumed); d <= 0 restores the
// default.
func (c *Client) SetStallTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultStallTimeout
	}
	c.stall.Store(int64(d))
}

func (c *Client) stallTimeout() time.Duration { return time.Duration(c.stall.Load()) }

// NewClient returns a client; dial, if not nil, replaces the TCP dialer.
func NewClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Client {
	if dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}
		dial = d.DialContext
	}
	cl := &Client{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &stallConn{Conn: c, cl: cl}, nil
		},
		ExpectContinueTimeout:  5 * time.Second,
		ResponseHeaderTimeout:  time.Minute,
		MaxResponseHeaderBytes: 16 << 10, // the receiver is a member, not trusted to keep it small
		WriteBufferSize:        256 << 10,
		ReadBufferSize:         64 << 10,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
	}
	cl.hc, cl.dial = &http.Client{Transport: tr}, dial
	cl.SetStallTimeout(DefaultStallTimeout)
	return cl
}

// stallConn fails a write the network does not take within the client's
// stall timeout, so that a dead path is noticed and the transfer resumed.
type stallConn struct {
	net.Conn
	cl *Client
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.cl.stallTimeout()))
	return c.Conn.Write(p)
}

func fileURL(peer netip.AddrPort, name string) string {
	return "http://" + peer.String() + "/v1/files/" + url.PathEscape(name)
}

// PeerAddr is the peer API's address at a node's tunnel address.
func PeerAddr(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, PeerAPIPort) }

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	return decodeAnswer(resp, out)
}

// decodeAnswer reads a peer API answer into out (if not nil), or its
// error, and closes its body.
func decodeAnswer(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb) != nil || eb.Error == "" {
			eb.Error = "peer answered " + resp.Status
		}
		return &RemoteError{Status: resp.StatusCode, Msg: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(out); err != nil {
		return fmt.Errorf("bad answer from peer: %w", err)
	}
	return nil
}

// Offset asks the peer at peer how many bytes of h it already holds.
func (c *Client) Offset(ctx context.Context, peer netip.AddrPort, h Header) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fileURL(peer, h.Name)+"?"+url.Values{
		"size": {strconv.FormatInt(h.Size, 10)}, "sha256": {h.SHA256}}.Encode(), nil)
	if err != nil {
		return 0, err
	}
	var a offsetAnswer
	if err := c.do(req, &a); err != nil {
		return 0, err
	}
	if a.Offset < 0 || a.Offset > h.Size {
		return 0, fmt.Errorf("peer answered offset %d for a file of %d bytes", a.Offset, h.Size)
	}
	return a.Offset, nil
}

// Put sends the bytes of h from off, read from body (exactly h.Size-off of
// them), and returns the file as the peer stored it.
func (c *Client) Put(ctx context.Context, peer netip.AddrPort, h Header, off int64, body io.Reader) (*File, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, fileURL(peer, h.Name), io.NopCloser(body))
	if err != nil {
		return nil, err
	}
	req.ContentLength = h.Size - off
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Warren-Size", strconv.FormatInt(h.Size, 10))
	req.Header.Set("Warren-Sha256", h.SHA256)
	req.Header.Set("Warren-Offset", strconv.FormatInt(off, 10))
	req.Header.Set("Expect", "100-continue")
	var f File
	err = c.do(req, &f)
	var re *RemoteError
	if err != nil && !errors.As(err, &re) && ctx.Err() == nil {
		// The receiver may have answered and hung up while we were still
		// sending (disk full): ask it why, briefly.
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, oerr := c.Offset(octx, peer, h)
		cancel()
		if errors.As(oerr, &re) && !re.Retryable() {
			return nil, oerr
		}
	}
	if err != nil {
		return nil, err
	}
	return &f, nil
}
