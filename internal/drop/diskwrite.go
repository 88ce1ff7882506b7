package drop

// Writing a transfer's bytes to disk: a reading loop and a writer that
// hashes what it wrote, direct I/O where the file system has it, early
// writeback, and picking up the hash of a resumed partial file.

import (
	"encoding"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// writeback is how many bytes copy lets a transfer write through the page
// cache before it has the kernel start writing them to the disk (without
// waiting), so that the sync before a file is finished has little left
// to do.
const writeback = 8 << 20

// dioAlign is the alignment of direct I/O (file offsets, lengths, memory).
const dioAlign = 4096

// copy copies exactly n bytes from r to the file at offset off, and to hs.
// A goroutine of its own writes each buffer the reading loop fills, then
// hashes it, so that reading overlaps writing and hashing. The file is
// written through dio (opened with O_DIRECT) where offsets and lengths
// are aligned, else through f. When copy returns, the bytes it counts are
// written and hashed.
func (in *Inbox) copy(f, dio *os.File, off int64, hs io.Writer, r io.Reader, n int64, progress func()) (int64, error) {
	const bufs, bufSize = 4, 1 << 20
	mem, err := unix.Mmap(-1, 0, bufs*bufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(mem)
	type chunk struct {
		b   []byte
		pos int64
	}
	free := make(chan []byte, bufs)
	for i := range bufs {
		free <- mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	full := make(chan chunk, bufs)
	var written int64
	var werr error
	var failed atomic.Bool
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		fd := int(f.Fd())
		flushed := off
		for c := range full {
			if werr == nil {
				if werr = writeAt(f, dio, c.b, c.pos); werr != nil {
					failed.Store(true)
				} else {
					hs.Write(c.b)
					written += int64(len(c.b))
					in.received.Add(int64(len(c.b)))
					if pos := off + written; dio == nil && pos-flushed >= writeback {
						unix.SyncFileRange(fd, flushed, pos-flushed, unix.SYNC_FILE_RANGE_WRITE)
						flushed = pos
					}
				}
			}
			free <- c.b[:cap(c.b)]
		}
	}()
	var rerr error
	for pos, end := off, off+n; pos < end && rerr == nil && !failed.Load(); {
		// Fill a buffer (reads return what the socket holds, often far
		// less); after an unaligned resume, only up to the next aligned
		// offset.
		buf := <-free
		want := min(int64(len(buf)), end-pos)
		if dio != nil && pos%dioAlign != 0 {
			want = min(want, dioAlign-pos%dioAlign)
		}
		m := 0
		for int64(m) < want && rerr == nil {
			var k int
			k, rerr = r.Read(buf[m:want])
			m += k
			if k > 0 && progress != nil {
				progress()
			}
		}
		if m == 0 {
			free <- buf
			continue
		}
		full <- chunk{buf[:m], pos}
		pos += int64(m)
		if rerr == io.EOF && pos < end {
			rerr = io.ErrUnexpectedEOF
		}
	}
	close(full)
	<-wrote
	switch {
	case werr != nil:
		return written, werr
	case rerr != nil && rerr != io.EOF:
		return written, rerr
	}
	return written, nil
}

// writeAt writes b (whose memory is aligned) at pos: the aligned part
// through dio if not nil, the rest through f.
func writeAt(f, dio *os.File, b []byte, pos int64) error {
	d := 0
	if dio != nil && pos%dioAlign == 0 {
		d = len(b) &^ (dioAlign - 1)
	}
	if d > 0 {
		if _, err := dio.WriteAt(b[:d], pos); err != nil {
			return err
		}
	}
	if d < len(b) {
		if _, err := f.WriteAt(b[d:], pos+int64(d)); err != nil {
			return err
		}
	}
	return nil
}

// resumeHash brings hs to the state after the first off bytes of f: from
// the state saved when the last transfer stopped, else by reading them.
func resumeHash(hs hash.Hash, f *os.File, off int64, pi *partialInfo) error {
	if pi.HashOffset == off && len(pi.HashState) > 0 {
		if hs.(encoding.BinaryUnmarshaler).UnmarshalBinary(pi.HashState) == nil {
			return nil
		}
		hs.Reset()
	}
	if _, err := io.Copy(hs, io.NewSectionReader(f, 0, off)); err != nil {
		return fmt.Errorf("read partial file: %w", err)
	}
	return nil
}
