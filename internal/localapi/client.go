package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// Client talks to a daemon's local API.
type Client struct {
	Socket string // default DefaultSocket
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	c := &Client{Socket: socket}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	return c
}

// dialError turns a connection failure into a line a user can act on.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the warren daemon at %s: is `warren daemon` running?", c.Socket)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("no permission to use %s: run as root or as a member of the daemon's API group", c.Socket)
	}
	return fmt.Errorf("warren daemon at %s: %w", c.Socket, err)
}

func (c *Client) do(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://warrend"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.dialError(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var eb errorBody
		if json.NewDecoder(io.LimitReader(resp.Body, maxRequest)).Decode(&eb) == nil && eb.Error != "" {
			return nil, errors.New(eb.Error)
		}
		return nil, fmt.Errorf("warren daemon: HTTP %s", resp.Status)
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.do(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("warren daemon: bad answer: %w", err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.call(ctx, http.MethodGet, "/localapi/v1/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Up joins (if needed) and brings the node up.
func (c *Client) Up(ctx context.Context, req UpRequest) (*Status, error) {
	var st Status
	if err := c.call(ctx, http.MethodPost, "/localapi/v1/up", req, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Down takes the node off the mesh, keeping its registration.
func (c *Client) Down(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/localapi/v1/down", struct{}{}, nil)
}

// Logout takes the node down and forgets its registration.
func (c *Client) Logout(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/localapi/v1/logout", struct{}{}, nil)
}

// Ping pings a peer, calling report for each probe as it completes.
func (c *Client) Ping(ctx context.Context, req PingRequest, report func(PingResult)) error {
	resp, err := c.do(ctx, http.MethodPost, "/localapi/v1/ping", req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var pr PingResult
		if err := json.Unmarshal(sc.Bytes(), &pr); err != nil {
			return fmt.Errorf("warren daemon: bad ping answer: %w", err)
		}
		if pr.Seq == 0 && pr.Err != "" {
			return errors.New(pr.Err)
		}
		report(pr)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return ctx.Err()
}

// Netcheck asks the daemon to measure connectivity.
func (c *Client) Netcheck(ctx context.Context) (*NetcheckReport, error) {
	var rep NetcheckReport
	if err := c.call(ctx, http.MethodGet, "/localapi/v1/netcheck", nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
