package portmap

import "time"

// epochState is the last epoch (the gateway's seconds since it started
// keeping mappings) a gateway sent for one protocol, and when it came.
type epochState struct {
	server uint32
	client time.Time
}

// checkEpoch records a reply's epoch and reports whether it is consistent
// with the last one. An inconsistent epoch means the gateway restarted
// and lost its mappings — or the reply is forged: either way the reply is
// not used, the baseline is forgotten and the request goes out again, so
// a real restart costs one more round trip and the next answer sets the
// new baseline (the mapping request then re-creates the mapping).
//
// NAT-PMP (RFC 6886 §3.6): the epoch must have grown by at least 7/8 of the
// client's elapsed time, less 2 seconds. PCP (RFC 6887 §8.5): it must not
// go back by more than a second, and both clocks must agree within 1/16
// plus 2 seconds either way.
func (c *Client) checkEpoch(p Protocol, server uint32) bool {
	now := c.clk.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.epochs[p]
	if prev == nil {
		c.epochs[p] = &epochState{server: server, client: now}
		return true
	}
	cd := int64(now.Sub(prev.client) / time.Second)
	sd := int64(server) - int64(prev.server)
	ok := true
	switch p {
	case NATPMP:
		ok = sd >= cd*7/8-2
	default:
		if int64(server) < int64(prev.server)-1 {
			ok = false
		} else if cd+2 < sd-sd/16 || sd+2 < cd-cd/16 {
			ok = false
		}
	}
	if !ok {
		delete(c.epochs, p)
		c.log.Info("port mapping: gateway epoch inconsistent (restarted?), asking again", "protocol", p, "epoch", server, "previous", prev.server, "elapsed", now.Sub(prev.client))
		return false
	}
	prev.server, prev.client = server, now
	return true
}
