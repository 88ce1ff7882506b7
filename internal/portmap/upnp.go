package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
)

// igdClient is what the three WAN connection services of an Internet
// Gateway Device share (WANIPConnection:1 and :2, WANPPPConnection:1).
type igdClient interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string, internalPort uint16, internalClient string, enabled bool, description string, leaseSeconds uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

// upnpGateway is the gateway's WAN connection service.
type upnpGateway struct {
	client igdClient
}

const (
	maxUPnPBody = 64 << 10 // a device description or SOAP answer
	upnpTimeout = 3 * time.Second
	upnpDesc    = "warren"
)

// httpClient is the UPnP HTTP client: the client's socket options, short
// timeouts, no redirects and bounded bodies (the answers come from a box on
// the LAN that we do not trust with our memory).
func (c *Client) httpClient() *http.Client {
	d := &net.Dialer{Timeout: upnpTimeout, Control: c.opts.Control}
	return &http.Client{
		Timeout:       upnpTimeout,
		Transport:     limitTransport{&http.Transport{DialContext: d.DialContext, ResponseHeaderTimeout: upnpTimeout, MaxResponseHeaderBytes: 16 << 10, DisableKeepAlives: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type limitTransport struct{ rt http.RoundTripper }

func (l limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxUPnPBody), resp.Body}
	}
	return resp, err
}

// ssdpSearch is a unicast M-SEARCH for an Internet Gateway Device.
func ssdpSearch(gw netip.AddrPort) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\n" +
		"HOST: " + gw.String() + "\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 2\r\n\r\n")
}

// discoverUPnP asks the gateway itself (unicast SSDP, no multicast to the
// whole LAN) for its device description, and finds its WAN connection
// service. The description and the service must live on the gateway.
func (c *Client) discoverUPnP(ctx context.Context, gw netip.Addr) (*upnpGateway, error) {
	conn, err := c.listen(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	to := netip.AddrPortFrom(gw, c.opts.SSDPPort)
	buf := make([]byte, 2048)
	wait := 500 * time.Millisecond
	var loc *url.URL
	for attempt := 0; attempt < c.opts.Attempts && loc == nil; attempt++ {
		if _, err := conn.WriteToUDPAddrPort(ssdpSearch(to), to); err != nil {
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		wait *= 2
		for loc == nil {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				break
			}
			if from.Addr().Unmap() != gw {
				c.Stats.WrongSource.Add(1)
				continue
			}
			u, err := parseSSDPResponse(buf[:n], gw)
			if err != nil {
				c.Stats.Malformed.Add(1)
				continue
			}
			loc = u
		}
	}
	if loc == nil {
		return nil, errNoAnswer
	}
	root, err := c.fetchRootDevice(ctx, loc)
	if err != nil {
		return nil, err
	}
	hc := c.httpClient()
	var found []igdClient
	onGateway := func(sc *goupnp.ServiceClient) bool {
		if h, err := netip.ParseAddr(sc.SOAPClient.EndpointURL.Hostname()); err != nil || h.Unmap() != gw {
			c.Stats.Mismatch.Add(1)
			return false
		}
		sc.SOAPClient.HTTPClient = *hc
		return true
	}
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, cl := range cs {
			if onGateway(&cl.ServiceClient) {
				found = append(found, cl)
			}
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, cl := range cs {
			if onGateway(&cl.ServiceClient) {
				found = append(found, cl)
			}
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, cl := range cs {
			if onGateway(&cl.ServiceClient) {
				found = append(found, cl)
			}
		}
	}
	if len(found) == 0 {
		return nil, errors.New("the gateway's UPnP device has no WAN connection service")
	}
	return &upnpGateway{client: found[0]}, nil
}

// parseSSDPResponse takes the description URL from an M-SEARCH answer; it
// must be plain http on the gateway's own address.
func parseSSDPResponse(b []byte, gw netip.Addr) (*url.URL, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("SSDP status %d", resp.StatusCode)
	}
	if st := resp.Header.Get("St"); !strings.Contains(st, "InternetGatewayDevice") {
		return nil, fmt.Errorf("SSDP search target %q", st)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, err
	}
	h, err := netip.ParseAddr(u.Hostname())
	if err != nil || h.Unmap() != gw || u.Scheme != "http" {
		return nil, fmt.Errorf("SSDP location %q is not on the gateway", u)
	}
	return u, nil
}

// fetchRootDevice reads the device description as goupnp.DeviceByURL
// would, through the client's bounded HTTP client.
func (c *Client) fetchRootDevice(ctx context.Context, loc *url.URL) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("device description: %s", resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(resp.Body)
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("device description: %w", err)
	}
	// Relative URLs resolve against the description's own URL; a URLBase
	// elsewhere is refused later (every service must be on the gateway).
	base := loc
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, err
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// gatewayIGD returns the gateway's WAN connection service, found once.
func (c *Client) gatewayIGD(ctx context.Context, gw netip.Addr) (*upnpGateway, error) {
	c.mu.Lock()
	g := c.upnp
	c.mu.Unlock()
	if g != nil {
		return g, nil
	}
	g, err := c.discoverUPnP(ctx, gw)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.upnp = g
	c.mu.Unlock()
	return g, nil
}

// mapUPnP adds (or re-adds, which renews) the port mapping. When the
// service found before fails, it is looked for again at once: a gateway
// that restarted may serve it on another port.
func (c *Client) mapUPnP(ctx context.Context, gw, self netip.Addr, prev *Mapping) (Mapping, error) {
	c.mu.Lock()
	cached := c.upnp != nil
	c.mu.Unlock()
	m, err := c.mapUPnPOnce(ctx, gw, self, prev)
	if err != nil && cached && ctx.Err() == nil {
		m, err = c.mapUPnPOnce(ctx, gw, self, prev)
	}
	return m, err
}

// forgetIGD drops the service found, so the next use looks again.
func (c *Client) forgetIGD() {
	c.mu.Lock()
	c.upnp = nil
	c.mu.Unlock()
}

// mapUPnPOnce adds the mapping through the gateway's service (found first
// if need be). A gateway that only takes permanent leases (error 725) gets
// lease 0, and a taken external port one random other.
func (c *Client) mapUPnPOnce(ctx context.Context, gw, self netip.Addr, prev *Mapping) (Mapping, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*upnpTimeout)
	defer cancel()
	g, err := c.gatewayIGD(ctx, gw)
	if err != nil {
		return Mapping{}, err
	}
	ext := c.suggestion(prev, UPnP)
	lease := lifetimeSec(c.opts.Lifetime)
	add := func(port uint16, lease uint32) error {
		return g.client.AddPortMappingCtx(ctx, "", port, "UDP", c.opts.Port, self.String(), true, upnpDesc, lease)
	}
	err = add(ext, lease)
	if err != nil && strings.Contains(err.Error(), "725") {
		lease = 0
		err = add(ext, lease)
	}
	if err != nil {
		ext = uint16(1024 + rand.IntN(65535-1024))
		err = add(ext, lease)
	}
	if err != nil {
		c.forgetIGD()
		return Mapping{}, err
	}
	ipText, err := g.client.GetExternalIPAddressCtx(ctx)
	if err != nil {
		c.forgetIGD()
		return Mapping{}, err
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(ipText))
	if err != nil {
		return Mapping{}, fmt.Errorf("external address %q: %w", ipText, err)
	}
	life := time.Duration(lease) * time.Second
	if lease == 0 {
		life = c.opts.Lifetime // permanent: renew on our schedule anyway
	}
	return Mapping{External: netip.AddrPortFrom(ip.Unmap(), ext), Lifetime: life}, nil
}

// deleteUPnP removes the mapping.
func (c *Client) deleteUPnP(ctx context.Context, m *Mapping) error {
	c.mu.Lock()
	g := c.upnp
	c.mu.Unlock()
	if g == nil {
		return errors.New("no UPnP gateway")
	}
	return g.client.DeletePortMappingCtx(ctx, "", m.External.Port(), "UDP")
}
