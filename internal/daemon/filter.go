package daemon

import (
	"bytes"

	"warren/internal/filter"
	"warren/internal/netmap"
)

// filterState is the packet filter the daemon installed in the engine.
//
// The rule (see docs/POLICY.md): the engine enforces the filter of the
// last map applied. A delta that does not change the filter leaves it as
// it is (the server sends a filter change explicitly, never by omission),
// and the map saved on disk, applied at start before any peer is
// configured, restores it after a restart, so neither an update nor a
// restart opens or closes anything by itself. A map whose PacketFilter is
// absent means the deployment has no policy: no filter, everything the
// cryptokey routing accepts passes. A filter this build cannot read fails
// closed for new inbound flows (replies to this node's own flows still
// pass) and is logged.
type filterState struct {
	f   *filter.Filter // created once; its connection table survives rule changes
	raw []byte         // the PacketFilter installed; nil: none
}

// applyFilterLocked installs nm's packet filter in the engine; d.mu held.
func (d *Daemon) applyFilterLocked(nm *netmap.NetworkMap) {
	raw := nm.PacketFilter
	if len(raw) == 0 || string(raw) == "null" {
		if d.filter.raw != nil {
			d.dev.SetFilter(nil)
			d.filter.raw = nil
			d.log.Info("packet filter removed: the deployment has no policy")
		}
		return
	}
	if d.filter.raw != nil && bytes.Equal(raw, d.filter.raw) {
		return
	}
	spec, err := filter.ParseSpec(raw)
	if err != nil {
		d.log.Error("unreadable packet filter: refusing new inbound flows", "err", err)
		d.healthLocked("unreadable packet filter from the server: " + err.Error())
		spec = &filter.Spec{}
	}
	if d.filter.f == nil {
		d.filter.f = filter.New(0)
	}
	d.filter.f.Set(spec)
	d.dev.SetFilter(d.filter.f)
	d.filter.raw = bytes.Clone(raw)
	d.log.Info("packet filter installed", "rules", len(spec.Rules))
}
