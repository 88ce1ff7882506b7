package portmap

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
)

// fakeIGD is an in-process UPnP Internet Gateway Device on loopback: an
// SSDP responder and the HTTP server of its description and SOAP control.
type fakeIGD struct {
	ssdp     *net.UDPConn
	http     *httptest.Server
	location string // what SSDP answers
	desc     string // the device description

	mu    sync.Mutex
	maps  map[uint16]string // external port → "client:internal"
	calls map[string]int
}

const igdDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>fake</friendlyName>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/scpd.xml</SCPDURL><controlURL>%s</controlURL><eventSubURL>/evt</eventSubURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

func newFakeIGD(t *testing.T, controlURL string) *fakeIGD {
	t.Helper()
	g := &fakeIGD{maps: map[uint16]string{}, calls: map[string]int{}}
	g.http = httptest.NewServer(http.HandlerFunc(g.serveHTTP))
	t.Cleanup(g.http.Close)
	if controlURL == "" {
		controlURL = "/ctl"
	}
	g.location = g.http.URL + "/desc.xml"
	g.desc = fmt.Sprintf(igdDesc, controlURL)
	var err error
	g.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { g.ssdp.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := g.ssdp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
				continue
			}
			resp := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
				"USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nLOCATION: " + g.location + "\r\n\r\n"
			_, _ = g.ssdp.WriteToUDPAddrPort([]byte(resp), from)
		}
	}()
	return g
}

func (g *fakeIGD) port() uint16 { return uint16(g.ssdp.LocalAddr().(*net.UDPAddr).Port) }

func (g *fakeIGD) serveHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.URL.Path == "/desc.xml" {
		io.WriteString(w, g.desc)
		return
	}
	if r.URL.Path != "/ctl" {
		http.NotFound(w, r)
		return
	}
	action := r.Header.Get("SOAPAction")
	action = strings.Trim(action[strings.Index(action, "#")+1:], `"`)
	g.calls[action]++
	var req struct {
		Body struct {
			Inner struct {
				ExternalPort   uint16 `xml:"NewExternalPort"`
				InternalPort   uint16 `xml:"NewInternalPort"`
				InternalClient string `xml:"NewInternalClient"`
			} `xml:",any"`
		}
	}
	body, _ := io.ReadAll(r.Body)
	_ = xml.Unmarshal(body, &req)
	in := req.Body.Inner
	out := ""
	switch action {
	case "AddPortMapping":
		g.maps[in.ExternalPort] = fmt.Sprintf("%s:%d", in.InternalClient, in.InternalPort)
	case "DeletePortMapping":
		delete(g.maps, in.ExternalPort)
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>11.19.0.1</NewExternalIPAddress>"
	}
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">%s</u:%sResponse></s:Body></s:Envelope>`, action, out, action)
}

func (g *fakeIGD) mapping(ext uint16) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maps[ext]
}

func newUPnPClient(g *fakeIGD, clk clock.Clock) *Client {
	lo := netip.MustParseAddr("127.0.0.1")
	return New(Options{
		Port:         41641,
		Gateway:      func() (netip.Addr, netip.Addr, error) { return lo, lo, nil },
		Protocols:    []Protocol{UPnP},
		Lifetime:     10 * time.Minute,
		SSDPPort:     g.port(),
		AnnounceAddr: "127.0.0.1:0",
		Clock:        clk,
	})
}

func TestMapsWithUPnPRenewsAndDeletes(t *testing.T) {
	clk := clock.NewFake(t0)
	g := newFakeIGD(t, "")
	c := newUPnPClient(g, clk)
	cancel := run(t, c, clk)
	m, ok := c.Mapping()
	if !ok || m.Protocol != UPnP || m.External != netip.MustParseAddrPort("11.19.0.1:41641") {
		t.Fatalf("mapping %+v %v", m, ok)
	}
	if got := g.mapping(41641); got != "127.0.0.1:41641" {
		t.Fatalf("gateway maps 41641 to %q", got)
	}
	advanceToNext(t, clk)
	g.mu.Lock()
	adds := g.calls["AddPortMapping"]
	g.mu.Unlock()
	if adds != 2 {
		t.Fatalf("%d AddPortMapping calls, want 2 (map, renew)", adds)
	}
	cancel()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := g.mapping(41641); got != "" {
		t.Errorf("mapping left on the gateway: %q", got)
	}
}

// A description whose control URL points at another host is refused: the
// client talks SOAP to the gateway only.
func TestUPnPRefusesServiceOffTheGateway(t *testing.T) {
	clk := clock.NewFake(t0)
	g := newFakeIGD(t, "http://192.0.2.1:80/ctl")
	c := newUPnPClient(g, clk)
	run(t, c, clk)
	if m, ok := c.Mapping(); ok {
		t.Fatalf("mapped through a service off the gateway: %+v", m)
	}
	if n := c.Stats.Mismatch.Load(); n == 0 {
		t.Error("refusal not counted")
	}
}

func TestParseSSDPResponse(t *testing.T) {
	gw := netip.MustParseAddr("198.19.1.1")
	ok := "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://198.19.1.1:5000/rootDesc.xml\r\n\r\n"
	if u, err := parseSSDPResponse([]byte(ok), gw); err != nil || u.Port() != "5000" {
		t.Fatalf("%v %v", u, err)
	}
	for _, loc := range []string{"http://198.19.1.9:5000/d.xml", "https://198.19.1.1/d.xml", "http://router.lan/d.xml", "file:///etc/passwd"} {
		b := strings.Replace(ok, "http://198.19.1.1:5000/rootDesc.xml", loc, 1)
		if _, err := parseSSDPResponse([]byte(b), gw); err == nil {
			t.Errorf("location %s accepted", loc)
		}
	}
}
