package server

import (
	"time"
)

// auditPruneEvery is how often the duty holder deletes the audit entries
// older than Options.AuditKeep.
const auditPruneEvery = time.Hour

// pruneAudit is the audit log's retention, one of the singleton duties:
// at the first pass and then once an hour (on the server's clock), the
// entries older than AuditKeep are deleted; AuditKeep 0 keeps them all.
// Run by the worker, no lock held.
func (s *Server) pruneAudit() {
	if s.opts.AuditKeep <= 0 || !s.hasDuties() {
		return
	}
	now := s.clk.Now()
	if !s.auditPruned.IsZero() && now.Sub(s.auditPruned) < auditPruneEvery {
		return
	}
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.PruneAudit(ctx, now.Add(-s.opts.AuditKeep))
	if err != nil {
		s.log.Error("control: pruning the audit log failed", "err", err)
		return // again at the next pass
	}
	s.auditPruned = now
	if n > 0 {
		s.log.Info("control: pruned the audit log", "deleted", n, "keep", s.opts.AuditKeep.String())
	}
}
