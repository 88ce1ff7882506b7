package drop

// The inbox's limits: the quota of waiting bytes, reserved atomically by
// each upload in progress, and the caps on concurrent uploads.

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Each upload in progress holds buffers of its own (4 MiB, see copy), so
// an inbox receives at most MaxTransfersPerSender uploads from one sending
// node and MaxTransfers in all at once; extra ones fail with ErrTooMany.
const (
	MaxTransfersPerSender = 4
	MaxTransfers          = 16
)

// capsLocked checks that one more upload from sender from stays within
// the transfer caps; in.mu held.
func (in *Inbox) capsLocked(from string) error {
	mine, all := 0, 0
	for _, t := range in.active {
		if t.upload {
			all++
			if t.from == from {
				mine++
			}
		}
	}
	if mine >= MaxTransfersPerSender {
		return fmt.Errorf("%w: %d from this node already (at most %d at once); try again later", ErrTooMany, mine, MaxTransfersPerSender)
	}
	if all >= MaxTransfers {
		return fmt.Errorf("%w: %d already (at most %d at once); try again later", ErrTooMany, all, MaxTransfers)
	}
	return nil
}

// Waiting returns the bytes the inbox holds or has promised, except those
// of file skip: finished files, the declared size of each upload in
// progress, and the bytes other partial files hold. A partial file whose
// upload stopped counts only what arrived, not the size its sender
// declared, so a sender cannot pin the quota by declaring a huge file and
// sending nothing; only an upload in progress (which IdleTimeout ends
// when its sender stalls) holds its declared size.
func (in *Inbox) Waiting(skip string) int64 {
	in.qmu.Lock()
	defer in.qmu.Unlock()
	return in.waitingLocked(skip)
}

// waitingLocked is Waiting; in.qmu held.
func (in *Inbox) waitingLocked(skip string) int64 {
	ents, _ := os.ReadDir(in.dir)
	var n int64
	for _, e := range ents {
		name := e.Name()
		if p, ok := partialName(name); ok {
			if _, active := in.reserved[p]; p == skip || active || !e.Type().IsRegular() {
				continue
			}
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
			continue
		}
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	for p, size := range in.reserved {
		if p != skip {
			n += size
		}
	}
	return n
}

// reserve checks that h fits (see roomLocked) and reserves its declared
// size for transfer t until t ends, in one step, so that concurrent
// uploads cannot all pass the check before any of them counts.
func (in *Inbox) reserve(h Header, off int64, t *transfer) error {
	in.qmu.Lock()
	defer in.qmu.Unlock()
	if err := in.roomLocked(h, off); err != nil {
		return err
	}
	in.reserved[h.Name] = h.Size
	t.reserved = true
	return nil
}

// roomLocked checks that h, from off, fits the quota and the rest of it
// the disk; in.qmu held.
func (in *Inbox) roomLocked(h Header, off int64) error {
	if w := in.waitingLocked(h.Name); w+h.Size > in.quota {
		return fmt.Errorf("%w (%d bytes waiting, %d more would pass the quota of %d)", ErrQuota, w, h.Size, in.quota)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(in.dir, &st); err == nil {
		if free := int64(st.Bavail) * st.Bsize; free < h.Size-off {
			return fmt.Errorf("%w: %d bytes free, %d needed", ErrNoSpace, free, h.Size-off)
		}
	}
	return nil
}
