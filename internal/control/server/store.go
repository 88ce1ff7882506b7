package server

import (
	"context"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// Store is what the server uses of its store: *store.Store. Tests wrap it
// (to stall a write and see what still works meanwhile).
type Store interface {
	// Reading the world and following its changes (follow.go).
	Changes(ctx context.Context, after int64, limit int) ([]store.Change, int64, error)
	LastChange(ctx context.Context) (int64, error)
	PruneChanges(ctx context.Context, upTo int64) error
	ListNodes(ctx context.Context, userID int64) ([]*store.Node, error)
	GetNodes(ctx context.Context, ids []int64) ([]*store.Node, error)
	GetNodeByKey(ctx context.Context, key pubkey.Node) (*store.Node, error)
	ListUsers(ctx context.Context) ([]*store.User, error)
	GetUser(ctx context.Context, id int64) (*store.User, error)
	DNSConfig(ctx context.Context) (store.DNSConfig, error)
	Policy(ctx context.Context) (*store.StoredPolicy, error)
	ServiceAddrs() []netip.Addr

	// Writes on behalf of nodes.
	RegisterNode(ctx context.Context, authKey string, key pubkey.Node, hostname string, o store.RegisterOptions) (*store.Node, error)
	RotateNodeKey(ctx context.Context, id int64, newKey pubkey.Node) error
	DeleteNode(ctx context.Context, id int64) error
	SetOnline(ctx context.Context, id int64, online bool, lastSeen time.Time) error
	UpdateEndpoints(ctx context.Context, id int64, endpoints []string) error
	SetDiscoKey(ctx context.Context, id int64, disco pubkey.Disco) error
	SetAdvertisedRoutes(ctx context.Context, id int64, routes []netip.Prefix) error
	ReportWireGuard(ctx context.Context, gateway int64, reports []store.WireGuardReport) error

	// Interactive registration (interactive.go).
	GetNode(ctx context.Context, id int64) (*store.Node, error)
	CreateRegistration(ctx context.Context, key pubkey.Node, hostname string, ttl time.Duration) (*store.Registration, error)
	GetRegistration(ctx context.Context, regID string) (*store.Registration, error)
	CompleteRegistration(ctx context.Context, regID string, userID int64, expiry time.Time, approved bool) (*store.Node, error)
	RecordAudit(ctx context.Context, e store.AuditEntry) error
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
	SetHostinfo(ctx context.Context, id int64, h store.Hostinfo) error
	SetRelayPort(ctx context.Context, id int64, port uint16) error
}

var _ Store = (*store.Store)(nil)
