package device

import "github.com/warrenmesh/warren/internal/filter"

// SetFilter installs the inbound packet filter (nil removes it: everything
// the cryptokey routing accepts is delivered). With a filter, each packet
// read from the TUN is recorded (flows this node starts) and each
// decrypted packet must pass Allow, after the source check, before it is
// written to the TUN; refused ones count in Stats.DropPolicy, or in
// Stats.DropDestination when addressed where this node may not deliver
// nor forward (filter.Destinations). Without one the data plane pays one
// atomic load per batch.
func (d *Device) SetFilter(f *filter.Filter) { d.filter.Store(f) }
