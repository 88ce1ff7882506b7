package noiseconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	flynn "github.com/flynn/noise"

	"github.com/warrenmesh/warren/internal/noise"
)

func newHandshake(initiator bool, version uint16, key noise.PrivateKey, peer []byte, rng io.Reader) (*flynn.HandshakeState, error) {
	return newProtoHandshake(Control, initiator, version, key, peer, rng)
}

func newProtoHandshake(p Protocol, initiator bool, version uint16, key noise.PrivateKey, peer []byte, rng io.Reader) (*flynn.HandshakeState, error) {
	pub := key.PublicKey()
	if rng == nil {
		rng = rand.Reader
	}
	return flynn.NewHandshakeState(flynn.Config{
		CipherSuite:   cipherSuite,
		Random:        rng,
		Pattern:       flynn.HandshakeIK,
		Initiator:     initiator,
		Prologue:      p.prologue(version),
		StaticKeypair: flynn.DHKey{Private: key[:], Public: pub[:]},
		PeerStatic:    peer,
	})
}

// Dial connects to the control server at serverURL (http:// or https://;
// Path is appended to its path), authenticates it against serverKey and
// authenticates itself with clientKey. ctx bounds the dial and the
// handshake (DefaultHandshakeTimeout if ctx has no deadline); it has no
// effect on the returned Conn.
func Dial(ctx context.Context, serverURL string, serverKey noise.PublicKey, clientKey noise.PrivateKey) (*Conn, error) {
	return dial(ctx, serverURL, serverKey, clientKey, ProtocolVersion, ProtocolVersion)
}

// dial lets tests send a version header and a prologue version that differ.
func dial(ctx context.Context, serverURL string, serverKey noise.PublicKey, clientKey noise.PrivateKey, sentVersion, prologueVersion uint16) (*Conn, error) {
	return dialProto(ctx, DialOptions{}, serverURL, serverKey, clientKey, sentVersion, prologueVersion)
}

// dialProto is dial with options (protocol, proxy).
func dialProto(ctx context.Context, o DialOptions, serverURL string, serverKey noise.PublicKey, clientKey noise.PrivateKey, sentVersion, prologueVersion uint16) (*Conn, error) {
	proto := o.Protocol.orControl()
	if serverKey.IsZero() || serverKey.IsLowOrder() {
		return nil, fmt.Errorf("noiseconn: invalid server key")
	}
	if clientKey.IsZero() {
		return nil, fmt.Errorf("noiseconn: no client key")
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("noiseconn: bad server URL: %w", err)
	}
	var port string
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, fmt.Errorf("noiseconn: server URL %q: scheme must be http or https", serverURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("noiseconn: server URL %q has no host", serverURL)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	target := *u
	u.Path = strings.TrimSuffix(u.Path, "/") + proto.Path
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}

	hs, err := newProtoHandshake(proto, true, prologueVersion, clientKey, serverKey[:], nil)
	if err != nil {
		return nil, fmt.Errorf("noiseconn: %w", err)
	}
	init := make([]byte, 2, 2+msg1Len)
	binary.BigEndian.PutUint16(init, sentVersion)
	init, _, _, err = hs.WriteMessage(init, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}

	nc, err := o.dialTCP(ctx, &target, addr)
	if err != nil {
		return nil, fmt.Errorf("noiseconn: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if u.Scheme == "https" {
		tc := tls.Client(nc, &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}})
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("noiseconn: tls: %w", err)
		}
		nc = tc
	}
	// The context's deadline covers the whole exchange; cancelling it
	// unblocks a pending read or write.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("noiseconn: %w", err)
	}
	req.Header.Set("Upgrade", proto.UpgradeToken)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set(HandshakeHeader, base64.StdEncoding.EncodeToString(init))
	if err := req.Write(nc); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("noiseconn: sending upgrade request: %w", err))
	}
	// Nothing is authenticated yet: bound what the response may make us
	// read (and keep in memory).
	hl := &headLimit{r: nc, n: MaxResponseHeader}
	br := bufio.NewReader(hl)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, ctxErr(ctx, hl.err("noiseconn: reading upgrade response from "+addr, err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		msg := strings.TrimSpace(string(body))
		if sv := resp.Header.Get(VersionHeader); resp.StatusCode == http.StatusUpgradeRequired && sv != "" {
			return nil, fmt.Errorf("%w: this node speaks version %d, the server speaks version %s", ErrVersionMismatch, sentVersion, sv)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w: %w: %s: %s", ErrRefused, ErrNotAuthorized, resp.Status, msg)
		}
		if resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("%w: %s: %s (is the pinned server key right?)", ErrRefused, resp.Status, msg)
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrRefused, resp.Status, msg)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), proto.UpgradeToken) {
		return nil, fmt.Errorf("%w: server upgraded to %q, want %q", ErrRefused, resp.Header.Get("Upgrade"), proto.UpgradeToken)
	}
	msg2, err := base64.StdEncoding.DecodeString(resp.Header.Get(HandshakeHeader))
	if err != nil || len(msg2) != msg2Len {
		return nil, fmt.Errorf("%w: malformed response message", ErrHandshake)
	}
	payload, tx, rx, err := hs.ReadMessage(nil, msg2)
	if err != nil || len(payload) != 0 || tx == nil || rx == nil {
		return nil, fmt.Errorf("%w: server response does not verify (wrong server key?)", ErrHandshake)
	}
	if !stop() && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	ok = true
	return newConn(nc, afterHTTP(br, nc), serverKey, tx, rx), nil
}

// MaxResponseHeader bounds the bytes read for an HTTP response head before
// the session is authenticated (the upgrade's answer, a proxy's answer to
// CONNECT): a real one is a few hundred bytes.
const MaxResponseHeader = 16 << 10

// headLimit reads at most n bytes from r, then fails with
// ErrResponseTooLarge.
type headLimit struct {
	r io.Reader
	n int
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, ErrResponseTooLarge
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// err is the error for a failed read of a response head: a clear one
// when the head was too large (the parser may have failed first on the
// truncated line).
func (l *headLimit) err(what string, err error) error {
	if l.n <= 0 || errors.Is(err, ErrResponseTooLarge) {
		return tooLarge(what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tooLarge says what was too large; it wraps ErrResponseTooLarge.
type tooLarge string

func (e tooLarge) Error() string {
	return fmt.Sprintf("%s: the response header is over %d bytes (not a Warren server?)", string(e), MaxResponseHeader)
}

func (e tooLarge) Unwrap() error { return ErrResponseTooLarge }

// ctxErr reports an I/O error during the handshake as the context's error
// when the context caused it (its deadline is also the connection's).
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// Server accepts control connections; mount it at Path. Handle runs on the
// request's goroutine and owns the Conn, which is closed when Handle
// returns. Use an http.Server with ReadHeaderTimeout set, so a client that
// never finishes its request is dropped too.
type Server struct {
	// Key is the server's static private key.
	Key noise.PrivateKey
	// Handle is called with each authenticated connection.
	Handle func(*Conn)
	// HandshakeTimeout bounds writing the handshake response;
	// DefaultHandshakeTimeout when zero.
	HandshakeTimeout time.Duration
	// Protocol is the protocol served; zero means the control protocol.
	Protocol Protocol
	// Authorize, if set, is asked about the authenticated node key before
	// the upgrade completes; an error refuses the node with 401 and the
	// error's text, and Handle is not called.
	Authorize func(peer noise.PublicKey) error
}

func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// ServeHTTP performs the upgrade and the responder side of the handshake.
// A client that fails to authenticate gets 403 and nothing else, and Handle
// is not called.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	proto := s.Protocol.orControl()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(w, http.StatusMethodNotAllowed, s.Protocol.label()+": use POST with Upgrade: "+proto.UpgradeToken)
		return
	}
	if s.Handle == nil || s.Key.IsZero() {
		refuse(w, http.StatusInternalServerError, s.Protocol.label()+": server not configured")
		return
	}
	up := r.Header.Get("Upgrade")
	if !strings.EqualFold(up, proto.UpgradeToken) {
		if strings.HasPrefix(strings.ToLower(up), proto.tokenFamily()) {
			s.refuseVersion(w, fmt.Sprintf("unsupported control protocol %q", up))
			return
		}
		refuse(w, http.StatusBadRequest, s.Protocol.label()+": missing Upgrade: "+proto.UpgradeToken)
		return
	}
	init, err := base64.StdEncoding.DecodeString(r.Header.Get(HandshakeHeader))
	if err != nil || len(init) < 2 {
		refuse(w, http.StatusBadRequest, s.Protocol.label()+": malformed "+HandshakeHeader)
		return
	}
	if v := binary.BigEndian.Uint16(init); v != ProtocolVersion {
		s.refuseVersion(w, fmt.Sprintf("unsupported control protocol version %d", v))
		return
	}
	if len(init) != 2+msg1Len {
		refuse(w, http.StatusBadRequest, s.Protocol.label()+": malformed "+HandshakeHeader)
		return
	}
	hs, err := newProtoHandshake(proto, false, ProtocolVersion, s.Key, nil, nil)
	if err != nil {
		refuse(w, http.StatusInternalServerError, s.Protocol.label()+": internal error")
		return
	}
	payload, _, _, err := hs.ReadMessage(nil, init[2:])
	if err != nil || len(payload) != 0 {
		refuse(w, http.StatusForbidden, s.Protocol.label()+": handshake failed")
		return
	}
	var peer noise.PublicKey
	copy(peer[:], hs.PeerStatic())
	if peer.IsZero() || peer.IsLowOrder() {
		refuse(w, http.StatusForbidden, s.Protocol.label()+": handshake failed")
		return
	}
	if s.Authorize != nil {
		if err := s.Authorize(peer); err != nil {
			refuse(w, http.StatusUnauthorized, s.Protocol.label()+": "+err.Error())
			return
		}
	}
	msg2, rx, tx, err := hs.WriteMessage(nil, nil)
	if err != nil {
		refuse(w, http.StatusInternalServerError, s.Protocol.label()+": internal error")
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		refuse(w, http.StatusInternalServerError, s.Protocol.label()+": connection cannot be upgraded (HTTP/1.1 only)")
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	timeout := s.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	nc.SetDeadline(time.Now().Add(timeout))
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto.UpgradeToken + "\r\nConnection: Upgrade\r\n")
	b.WriteString(HandshakeHeader + ": " + base64.StdEncoding.EncodeToString(msg2) + "\r\n\r\n")
	if _, err := nc.Write(b.Bytes()); err != nil {
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	// The client may send frames right behind its request.
	c := newConn(nc, afterHTTP(brw.Reader, nc), peer, tx, rx)
	defer c.Close()
	s.Handle(c)
}

func (s *Server) refuseVersion(w http.ResponseWriter, msg string) {
	w.Header().Set(VersionHeader, strconv.Itoa(int(ProtocolVersion)))
	w.Header().Set("Upgrade", s.Protocol.orControl().UpgradeToken)
	refuse(w, http.StatusUpgradeRequired, fmt.Sprintf("%s: %s; this server speaks version %d", s.Protocol.label(), msg, ProtocolVersion))
}

// afterHTTP returns a reader for what follows the HTTP exchange on nc:
// any bytes br read past it, then nc. The bufio buffer is dropped.
func afterHTTP(br *bufio.Reader, nc net.Conn) io.Reader {
	n := br.Buffered()
	if n == 0 {
		return nc
	}
	pre, _ := br.Peek(n)
	return io.MultiReader(bytes.NewReader(bytes.Clone(pre)), nc)
}
