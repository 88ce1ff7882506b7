package store

import "context"

// Replicas' embedded relays: a replica that serves a relay registers it
// (RegisterRelay) with its public URL, STUN address and key, and every
// replica puts the relays of all live replicas into its maps
// (ReplicaRelays), so a node can relay through any of them. A relay leaves
// with its replica: on a clean shutdown (LeaveReplicas) or when its
// heartbeat lapses (MarkLapsedOffline). Each write is a logged change
// (ChangeRelays, migration 13), so every replica's maps follow at once.

// ReplicaRelayRegionBase is added to a replica relay's row ID to make its
// relay map region ID; regions of relay map files stay below it.
const ReplicaRelayRegionBase = 1000

// ReplicaRelay is a replica's embedded relay.
type ReplicaRelay struct {
	Region  int    // ReplicaRelayRegionBase + its row ID: unique, kept while its URL is registered
	URL     string // http(s)://HOST[:PORT]
	STUN    string // HOST:PORT of its STUN responder, or empty
	Key     string // the relay's public key (base64)
	Replica string // the replica serving it
}

// RegisterRelay records that replica serves the relay r.URL (r.Region is
// ignored). A relay already registered so is not written again, so
// calling it at every heartbeat logs no change.
func (s *Store) RegisterRelay(ctx context.Context, replica string, r ReplicaRelay) error {
	unlock := s.lockWrite()
	defer unlock()
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO replica_relays (url, stun, relay_key, replica) VALUES (?, ?, ?, ?)
		ON CONFLICT (url) DO UPDATE SET stun = excluded.stun, relay_key = excluded.relay_key, replica = excluded.replica
		WHERE replica_relays.stun <> excluded.stun OR replica_relays.relay_key <> excluded.relay_key OR replica_relays.replica <> excluded.replica`),
		r.URL, r.STUN, r.Key, replica)
	return wrap("register relay", err)
}

// ReplicaRelays returns the registered relays, oldest registration
// (lowest region) first.
func (s *Store) ReplicaRelays(ctx context.Context) ([]ReplicaRelay, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, url, stun, relay_key, replica FROM replica_relays ORDER BY id")
	if err != nil {
		return nil, wrap("replica relays", err)
	}
	defer rows.Close()
	var out []ReplicaRelay
	for rows.Next() {
		var r ReplicaRelay
		var id int64
		if err := rows.Scan(&id, &r.URL, &r.STUN, &r.Key, &r.Replica); err != nil {
			return nil, wrap("replica relays", err)
		}
		r.Region = ReplicaRelayRegionBase + int(id)
		out = append(out, r)
	}
	return out, wrap("replica relays", rows.Err())
}
