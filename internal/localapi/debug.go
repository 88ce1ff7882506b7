package localapi

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// DebugBackend is implemented by a Backend with debugging endpoints;
// Handler then serves its DebugHandler under /localapi/v1/debug/:
//
//	GET /localapi/v1/debug/metrics   Prometheus text exposition
//	GET /localapi/v1/debug/capture?peer=&outer=1&duration=&count=
//	                                 a live pcap stream (pcapng with outer=1)
//	GET /localapi/v1/debug/bundle    a text bug-report bundle
type DebugBackend interface {
	DebugHandler() http.Handler
}

// CaptureRequest selects what a capture records.
type CaptureRequest struct {
	Peer     string        // name, DNS name, key or tunnel address of a peer, or any inner IP; "" = all
	Outer    bool          // the encrypted WireGuard messages instead of the inner packets
	Duration time.Duration // stop after this long (0: until the client goes)
	Count    int           // stop after this many packets (0: no limit)
}

// Query encodes r as URL parameters.
func (r CaptureRequest) Query() url.Values {
	q := url.Values{}
	if r.Peer != "" {
		q.Set("peer", r.Peer)
	}
	if r.Outer {
		q.Set("outer", "1")
	}
	if r.Duration > 0 {
		q.Set("duration", r.Duration.String())
	}
	if r.Count > 0 {
		q.Set("count", strconv.Itoa(r.Count))
	}
	return q
}

// ParseCaptureRequest decodes the parameters of Query.
func ParseCaptureRequest(q url.Values) (CaptureRequest, error) {
	r := CaptureRequest{Peer: q.Get("peer"), Outer: q.Get("outer") == "1"}
	var err error
	if s := q.Get("duration"); s != "" {
		if r.Duration, err = time.ParseDuration(s); err != nil {
			return r, err
		}
	}
	if s := q.Get("count"); s != "" {
		if r.Count, err = strconv.Atoi(s); err != nil {
			return r, err
		}
	}
	return r, nil
}

// get streams the body of a GET of path into w.
func (c *Client) get(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// Metrics writes the daemon's metrics (Prometheus text format) to w.
func (c *Client) Metrics(ctx context.Context, w io.Writer) error {
	return c.get(ctx, "/localapi/v1/debug/metrics", w)
}

// Bundle writes a debug bundle to w.
func (c *Client) Bundle(ctx context.Context, w io.Writer) error {
	return c.get(ctx, "/localapi/v1/debug/bundle", w)
}

// Capture starts a capture and returns the pcap stream; the caller closes
// it (which ends the capture).
func (c *Client) Capture(ctx context.Context, req CaptureRequest) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/localapi/v1/debug/capture?"+req.Query().Encode(), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
