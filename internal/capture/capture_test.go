package capture

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
	"time"
)

// TestCopyRecordsPcap checks the classic format and that a stream cut in
// the middle of a record is copied up to the last whole record.
func TestCopyRecordsPcap(t *testing.T) {
	var b bytes.Buffer
	if err := WritePcapHeader(&b); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 123456000)
	var recs []byte
	for i := range 3 {
		recs = AppendPcapRecord(recs, t0, bytes.Repeat([]byte{byte(i)}, 40+i))
	}
	b.Write(recs)
	full := b.Bytes()
	if binary.LittleEndian.Uint32(full[20:]) != LinkTypeRaw {
		t.Fatal("link type")
	}
	if sec, us := binary.LittleEndian.Uint32(full[24:]), binary.LittleEndian.Uint32(full[28:]); sec != 1700000000 || us != 123456 {
		t.Fatalf("timestamp %d.%06d", sec, us)
	}
	var out bytes.Buffer
	n, err := CopyRecords(&out, bytes.NewReader(full))
	if err != nil || n != 3 || !bytes.Equal(out.Bytes(), full) {
		t.Fatalf("whole stream: %d records, %v, equal %v", n, err, bytes.Equal(out.Bytes(), full))
	}
	out.Reset()
	cut := full[:len(full)-5]
	n, err = CopyRecords(&out, io.MultiReader(bytes.NewReader(cut[:30]), bytes.NewReader(cut[30:])))
	if err != nil || n != 2 || out.Len() != len(full)-(16+42) {
		t.Fatalf("cut stream: %d records, %d bytes, %v", n, out.Len(), err)
	}
	if _, err := CopyRecords(&out, bytes.NewReader([]byte("not a capture"))); err == nil {
		t.Fatal("garbage accepted")
	}
}

// TestPcapng checks the block structure: section header, interface, then
// enhanced packet blocks with their comment and matching trailing lengths.
func TestPcapng(t *testing.T) {
	var b bytes.Buffer
	WritePcapngHeader(&b)
	pkt := AppendUDP(nil, netip.MustParseAddrPort("0.0.0.0:41641"), netip.MustParseAddrPort("198.18.2.2:41641"), []byte("wireguard!"))
	b.Write(AppendPcapngRecord(nil, time.Now(), pkt, "out node2 via direct 198.18.2.2:41641"))
	b.Write(AppendPcapngRecord(nil, time.Now(), pkt[:29], ""))
	data := b.Bytes()
	var types []uint32
	for off := 0; off < len(data); {
		typ, n := binary.LittleEndian.Uint32(data[off:]), int(binary.LittleEndian.Uint32(data[off+4:]))
		if n%4 != 0 || off+n > len(data) || binary.LittleEndian.Uint32(data[off+n-4:]) != uint32(n) {
			t.Fatalf("block at %d: type %x length %d (file %d)", off, typ, n, len(data))
		}
		types = append(types, typ)
		off += n
	}
	if len(types) != 4 || types[0] != blockSHB || types[1] != blockIDB || types[2] != blockEPB || types[3] != blockEPB {
		t.Fatalf("blocks %x", types)
	}
	if !bytes.Contains(data, []byte("via direct 198.18.2.2:41641")) {
		t.Fatal("comment missing")
	}
	var out bytes.Buffer
	if n, err := CopyRecords(&out, bytes.NewReader(data)); n != 2 || err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("copy: %d packets, %v", n, err)
	}
	// The synthesized IPv4 header: right length, valid checksum.
	if len(pkt) != 20+8+10 || pkt[9] != 17 || ipv4Checksum(pkt[:20]) != 0 {
		t.Fatalf("IPv4/UDP header % x", pkt[:28])
	}
	v6 := AppendUDP(nil, netip.MustParseAddrPort("[::]:1"), netip.MustParseAddrPort("[fd77::1]:2"), []byte("x"))
	if len(v6) != 40+8+1 || v6[0]>>4 != 6 || v6[6] != 17 {
		t.Fatalf("IPv6/UDP header % x", v6)
	}
}
