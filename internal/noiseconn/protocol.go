package noiseconn

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

// Protocol names one use of this transport. Sessions of different
// protocols never mix: the upgrade request goes to another path with
// another Upgrade token, and the Noise prologue starts with another name, so
// a handshake meant for one can never complete as the other. The zero
// Protocol is the control protocol.
type Protocol struct {
	// Path is where the upgrade request goes, relative to the server URL.
	Path string
	// UpgradeToken is the HTTP Upgrade token; it should end in "-v" and
	// the version (e.g. "warren-relay-v1").
	UpgradeToken string
	// Name is the first part of the Noise prologue (e.g. "warren relay v1").
	Name string
}

// Control is the control protocol: Path, UpgradeToken and ProtocolName.
var Control = Protocol{Path: Path, UpgradeToken: UpgradeToken, Name: ProtocolName}

// ErrNotAuthorized is wrapped (with ErrRefused) by Dial's error when the
// server completed the key exchange but does not accept this node's key
// (Server.Authorize said no).
var ErrNotAuthorized = errors.New("noiseconn: server does not accept this node key")

func (p Protocol) orControl() Protocol {
	if p == (Protocol{}) {
		return Control
	}
	return p
}

// label is how refusals name the protocol, e.g. "warren control".
func (p Protocol) label() string {
	p = p.orControl()
	name := p.Name
	if i := strings.LastIndexByte(name, ' '); i > 0 && strings.HasPrefix(name[i+1:], "v") {
		name = name[:i]
	}
	return name
}

// tokenFamily is the Upgrade token without its version ("warren-control-"),
// used to recognise a peer speaking another version of the same protocol.
func (p Protocol) tokenFamily() string {
	t := strings.ToLower(p.orControl().UpgradeToken)
	t = strings.TrimRight(t, "0123456789")
	return strings.TrimSuffix(t, "v")
}

// prologue returns the Noise prologue for protocol p at version v.
func (p Protocol) prologue(v uint16) []byte {
	return append([]byte(p.orControl().Name), byte(v>>8), byte(v))
}

// DialOptions are the optional parts of DialWith.
type DialOptions struct {
	// Protocol selects the protocol; zero means the control protocol.
	Protocol Protocol
	// Proxy returns the HTTP proxy for a request (nil URL: direct), with
	// the signature of http.Transport.Proxy; use http.ProxyFromEnvironment
	// to honour HTTP_PROXY, HTTPS_PROXY and NO_PROXY. The connection is
	// tunnelled with CONNECT, so TLS (https server URLs) and the Noise
	// session run end to end through the proxy. nil: always direct.
	Proxy func(*http.Request) (*url.URL, error)
	// Control, if set, is called on the TCP socket before it connects
	// (net.Dialer.Control): the node daemon marks its sockets with SO_MARK
	// so they bypass its exit-node routing.
	Control func(network, address string, c syscall.RawConn) error
}

// DialWith is Dial with options: another protocol, or an HTTP proxy.
func DialWith(ctx context.Context, o DialOptions, serverURL string, serverKey noise.PublicKey, clientKey noise.PrivateKey) (*Conn, error) {
	return dialProto(ctx, o, serverURL, serverKey, clientKey, ProtocolVersion, ProtocolVersion)
}

// dialTCP opens the TCP connection to addr ("host:port" of target),
// through the proxy o.Proxy picks for target if any.
func (o DialOptions) dialTCP(ctx context.Context, target *url.URL, addr string) (net.Conn, error) {
	d := net.Dialer{Control: o.Control}
	if o.Proxy == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	// The proxy is chosen by the URL's scheme, as net/http would.
	pu, err := o.Proxy(&http.Request{Method: http.MethodConnect, URL: target, Host: target.Host, Header: http.Header{}})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if pu == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	if pu.Scheme != "http" && pu.Scheme != "" {
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported", pu.Redacted())
	}
	paddr := pu.Host
	if pu.Port() == "" {
		paddr = net.JoinHostPort(pu.Hostname(), "80")
	}
	nc, err := d.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", pu.Redacted(), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := pu.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	fail := func(err error) (net.Conn, error) {
		nc.Close()
		return nil, ctxErr(ctx, fmt.Errorf("proxy %s: %w", pu.Redacted(), err))
	}
	if err := req.Write(nc); err != nil {
		return fail(err)
	}
	// Read the response byte-wise up to its end so nothing of the tunnelled
	// stream is consumed: the reader is discarded afterwards.
	hl := &headLimit{r: oneByteReader{nc}, n: MaxResponseHeader}
	br := bufio.NewReaderSize(hl, 16)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(hl.err("reading the answer to CONNECT", err))
	}
	// The body is not read: a 200 has none, and on an error the connection
	// is dropped anyway.
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("CONNECT %s: %s", addr, resp.Status))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// oneByteReader reads at most one byte per call, so a bufio.Reader over it
// never reads past what it was asked for.
type oneByteReader struct{ nc net.Conn }

func (r oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return r.nc.Read(p)
}
