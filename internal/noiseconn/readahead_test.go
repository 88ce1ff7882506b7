package noiseconn

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// countingReader counts the Read calls (the system calls of a socket).
type countingReader struct {
	r     io.Reader
	calls int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.calls++
	return c.r.Read(p)
}

// TestFrameReaderReadsAhead: a busy stream of small frames is read with
// many frames per Read call, not two calls (header, body) per frame, and
// every frame comes back whole and in order; the buffer stays bounded.
func TestFrameReaderReadsAhead(t *testing.T) {
	const frames, size = 400, 1500
	var stream []byte
	for i := range frames {
		stream = binary.BigEndian.AppendUint16(stream, size)
		stream = append(stream, bytes.Repeat([]byte{byte(i)}, size)...)
	}
	cr := &countingReader{r: bytes.NewReader(stream)}
	var f frameReader
	for i := range frames {
		body, err := f.next(cr)
		if err != nil || len(body) != size || body[0] != byte(i) || body[size-1] != byte(i) {
			t.Fatalf("frame %d: %d bytes starting %d, %v", i, len(body), body[0], err)
		}
	}
	if _, err := f.next(cr); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
	if cr.calls > frames/8 {
		t.Errorf("%d Read calls for %d frames; want read-ahead (at most %d)", cr.calls, frames, frames/8)
	}
	if len(f.buf) > readAheadMax {
		t.Errorf("buffer of %d bytes, over %d", len(f.buf), readAheadMax)
	}
}
