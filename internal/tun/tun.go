// Package tun owns the packet device: the interface the WireGuard engine reads
// plaintext IP packets from and writes them back to, and its Linux TUN
// implementation (create or attach, MTU, up/down). Every method moves a batch
// of packets, each stored at a fixed header offset inside its buffer, so that
// offloads and a userspace netstack can sit behind the same contract.
//
// On Linux the TUN queue uses offloads when the kernel has them (see
// offload.go): the kernel hands over TCP and UDP super-packets of up to 64 KiB
// that Read splits into MTU-sized packets (GSO), and Write coalesces the
// segments of each flow in a batch into such super-packets (GRO), so that the
// kernel's stack handles one packet where it would handle dozens.
package tun

import "sync/atomic"

// Event is a change of the device's state reported on Events.
type Event int

const (
	EventUp Event = 1 << iota
	EventDown
	EventMTUUpdate
)

// Device is a batch packet device. It is the only way the engine reaches the
// host's IP stack.
type Device interface {
	// Read reads up to len(bufs) packets. Packet i is written to
	// bufs[i][offset:] and its length stored in sizes[i]. It returns the number
	// of packets read; it blocks until at least one is available or the device
	// is closed. offset leaves room in front of each packet for the transport
	// header of the tunnel message so no copy is needed to seal it.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes the packets bufs[i][offset:] to the host. It returns the
	// number of buffers consumed. A packet the host refuses (e.g. malformed)
	// is skipped, not an error of the whole batch. The device may use the
	// offset bytes in front of each packet and the spare capacity of each
	// buffer (to coalesce packets), so buffers must not overlap within
	// their capacity; their contents are undefined after Write.
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the largest number of packets Read returns and the
	// preferred size of a Write batch.
	BatchSize() int
	// MTU is the device's current MTU.
	MTU() (int, error)
	// Name is the interface name.
	Name() (string, error)
	// Events delivers state changes; it is closed when the device closes.
	Events() <-chan Event
	// Close closes the device; blocked Reads return an error.
	Close() error
}

// Poller is implemented by devices that can also be read without waiting.
// It lets a goroutine that is busy with other work (the engine's receive
// loop) take the packets queued for it in passing, rather than leave them
// until the goroutine that waits in Read is scheduled: with one P, a busy
// goroutine keeps a parked one from running for up to the runtime's 10 ms
// preemption tick, and TCP's ACKs held that long inflate its window and the
// queue in front of the tunnel (see docs/PERFORMANCE.md).
type Poller interface {
	// TryRead is Read that returns 0 packets instead of waiting when none is
	// queued, when another Read or TryRead has the queue, or when the
	// device cannot be read without waiting (see CanPoll). It returns the
	// device's errors as Read does.
	TryRead(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// WaitRead waits until a packet may be queued (or one read earlier is
	// kept for the next Read or TryRead); it returns an error once the
	// device is closed. A TryRead after it may still find nothing (another
	// reader took the packets).
	WaitRead() error
	// CanPoll reports whether TryRead and WaitRead work on this device; if
	// not, TryRead never finds anything and the device must be read with
	// Read.
	CanPoll() bool
}

// Stats count what an offload-mode device moved, so that its batching can
// be watched: ReadPackets/Reads is the mean number of segments a kernel
// super-packet was split into, WritePackets/Writes the mean number of
// packets coalesced into one write.
type Stats struct {
	Reads, ReadPackets   atomic.Uint64
	Writes, WritePackets atomic.Uint64
}

// StatsDevice is a Device that keeps Stats.
type StatsDevice interface {
	Stats() *Stats
}
