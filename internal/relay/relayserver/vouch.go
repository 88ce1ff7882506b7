package relayserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// StoreAllowed vouches from the coordination server's store (the relay
// embedded in `warren server`): a key is allowed while a node has it and
// has not expired. Answers are cached for ttl (default 5s) so a flood of
// connections costs at most one query per key per ttl; a store error
// counts as "no" and is not cached.
func StoreAllowed(st *store.Store, ttl time.Duration) func(pubkey.Node) bool {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	type entry struct {
		ok     bool
		expiry time.Time // node expiry; zero never
		until  time.Time
	}
	var mu sync.Mutex
	cache := map[pubkey.Node]entry{}
	return func(k pubkey.Node) bool {
		now := time.Now()
		mu.Lock()
		e, hit := cache[k]
		mu.Unlock()
		if !hit || now.After(e.until) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n, err := st.GetNodeByKey(ctx, k)
			cancel()
			switch {
			case errors.Is(err, store.ErrNotFound):
				e = entry{ok: false, until: now.Add(ttl)}
			case err != nil:
				return false
			default:
				e = entry{ok: true, expiry: n.Expiry, until: now.Add(ttl)}
			}
			mu.Lock()
			if len(cache) >= 65536 {
				clear(cache)
			}
			cache[k] = e
			mu.Unlock()
		}
		return e.ok && (e.expiry.IsZero() || now.Before(e.expiry))
	}
}

// AdminPoller vouches for a standalone relay: it polls the coordination
// server's admin API (GET /api/v1/relay/nodes, which lists only node keys
// and expiries, with a relay key wrly_... or an admin key) and allows the
// keys of nodes that are not expired. Until the first successful poll it
// allows nobody; when a poll fails it keeps the last answer (a relay
// should keep working while the coordination server is briefly away) and
// still honours the expiry times it knows.
type AdminPoller struct {
	// ServerURL is the coordination server's base URL.
	ServerURL string
	// APIKey is a relay key ("wrly_...", read-only: all it may do is list
	// node keys) or, over-privileged, an admin API key ("wapi_...").
	APIKey string
	// Interval between polls (default 5s).
	Interval time.Duration
	// HTTPClient makes the requests (default http.DefaultClient, which
	// honours the proxy environment).
	HTTPClient *http.Client
	// Logger gets poll failures at warning level (once per change of
	// error) and the recovery at info; nil discards.
	Logger *slog.Logger
	// Clock times the polls and tells whether a known expiry has passed;
	// nil is the real clock.
	Clock clock.Clock

	mu      sync.RWMutex
	keys    map[pubkey.Node]time.Time // node expiry; zero never
	ready   chan struct{}
	once    sync.Once
	lastErr string
	pollErr error // the last poll's result, under mu
}

func (p *AdminPoller) init() {
	p.once.Do(func() { p.ready = make(chan struct{}) })
}

// Allowed reports whether the last poll listed k as a node that has not
// expired.
func (p *AdminPoller) Allowed(k pubkey.Node) bool {
	p.mu.RLock()
	exp, ok := p.keys[k]
	p.mu.RUnlock()
	return ok && (exp.IsZero() || clock.Or(p.Clock).Now().Before(exp))
}

// Ready is closed after the first successful poll.
func (p *AdminPoller) Ready() <-chan struct{} {
	p.init()
	return p.ready
}

// Err returns the error of the last poll, nil when it succeeded (or none
// was made yet): whether the server vouching for nodes is reachable.
func (p *AdminPoller) Err() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.pollErr
}

// Poll fetches the node list once and replaces the allowed set.
func (p *AdminPoller) Poll(ctx context.Context) error {
	err := p.poll(ctx)
	p.mu.Lock()
	p.pollErr = err
	p.mu.Unlock()
	return err
}

func (p *AdminPoller) poll(ctx context.Context) error {
	p.init()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(p.ServerURL, "/")+admin.RelayNodesPath, nil)
	if err != nil {
		return fmt.Errorf("relay: poll nodes: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	hc := p.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("relay: poll nodes: %w", err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 64<<20)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(io.LimitReader(body, 4096)).Decode(&e)
		return fmt.Errorf("relay: poll nodes: %s: %s", resp.Status, e.Error)
	}
	var nodes []admin.RelayNode
	if err := json.NewDecoder(body).Decode(&nodes); err != nil {
		return fmt.Errorf("relay: poll nodes: %w", err)
	}
	keys := make(map[pubkey.Node]time.Time, len(nodes))
	for _, n := range nodes {
		if n.Expired {
			continue
		}
		k, err := pubkey.ParseNode(n.NodeKey)
		if err != nil {
			if n.NodeKey == "" {
				return errors.New("relay: poll nodes: the server does not list node keys (too old?)")
			}
			continue
		}
		var exp time.Time
		if n.Expiry != nil {
			exp = *n.Expiry
		}
		keys[k] = exp
	}
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	return nil
}

// Run polls every Interval until ctx ends.
func (p *AdminPoller) Run(ctx context.Context) {
	iv := p.Interval
	if iv <= 0 {
		iv = 5 * time.Second
	}
	t := clock.NewChanTimer(p.Clock)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, max(iv, 10*time.Second))
		err := p.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != p.lastErr && p.Logger != nil {
			if err != nil {
				p.Logger.Warn("relay: polling nodes failed; keeping the last node list", "err", err)
			} else {
				p.Logger.Info("relay: polling nodes works again")
			}
		}
		p.lastErr = msg
		t.Reset(iv)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
