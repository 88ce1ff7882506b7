package udp

import (
	"encoding/binary"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offloads. With UDP_SEGMENT (GSO, Linux 4.18) the sender hands the kernel
// one message holding a run of equal-sized datagrams and the segment size,
// and the kernel (or the NIC) cuts it up; with UDP_GRO (Linux 5.0) the
// kernel hands the receiver a run of datagrams of one flow coalesced into
// one message, with the segment size in a control message. Both are
// negotiated per socket at Open and can be switched off for comparisons and
// tests with WARREN_UDP_NO_OFFLOAD=1.

// EnvNoOffload names the environment variable that, set to "1" when Open is
// called, keeps the sockets from using UDP_SEGMENT and UDP_GRO.
const EnvNoOffload = "WARREN_UDP_NO_OFFLOAD"

const (
	// maxGSOPayload bounds the bytes of one UDP_SEGMENT message. The
	// kernel builds it as one packet, and a device passes a GSO packet on
	// whole only if the frame (link header included) is shorter than its
	// gso_max_size, 64 KiB on nearly all of them (netif_skb_features); a
	// longer one is cut into datagrams in software before it leaves, which
	// every hop after (a veth's peer, a router, the receiver) then handles
	// one by one. So the payload leaves room for the largest headers: an
	// Ethernet header with a VLAN tag (18), IPv6 (40) and UDP (8).
	maxGSOPayload = 65536 - 1 - 18 - 40 - 8
	// groBufMin is the smallest receive buffer that always holds a whole
	// coalesced message: the largest UDP payload (of IPv6, 65535 - 8).
	groBufMin = 65527
	// gsoSegmentsOld is UDP_MAX_SEGMENTS of Linux before 6.9, and
	// gsoSegmentsNew that of 6.9 on (kernel commit 1382e3b6a350). A message
	// with more segments fails with EINVAL.
	gsoSegmentsOld = 64
	gsoSegmentsNew = 128
)

// Control message layout: a struct cmsghdr, then the data. UDP_SEGMENT
// takes a __u16 segment size and must be exactly CMSG_LEN(2) long; UDP_GRO
// delivers an int.
var (
	cmsgDataOff  = unix.CmsgLen(0)
	gsoCmsgLen   = unix.CmsgLen(2)
	gsoCmsgSpace = unix.CmsgSpace(2)
	// groCmsgSpace leaves room for one more control message than UDP_GRO
	// so that an unexpected one does not truncate it.
	groCmsgSpace = unix.CmsgSpace(4) + unix.CmsgSpace(32)
)

// offloadWanted tells whether Open should try the offloads.
func offloadWanted() bool { return os.Getenv(EnvNoOffload) != "1" }

// kernelGSOSegments is UDP_MAX_SEGMENTS of the running kernel, judged by
// its release. A kernel that backported the larger limit is given the
// smaller one, which is merely conservative; a send that finds the limit
// smaller than believed lowers it (see socket.gsoFailed).
var kernelGSOSegments = sync.OnceValue(func() int32 {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return gsoSegmentsOld
	}
	major, minor := parseRelease(unix.ByteSliceToString(u.Release[:]))
	if major > 6 || major == 6 && minor >= 9 {
		return gsoSegmentsNew
	}
	return gsoSegmentsOld
})

// parseRelease reads "6.18.44-anything" as 6, 18.
func parseRelease(s string) (major, minor int) {
	nums := [2]int{}
	k := 0
	for i := 0; i < len(s) && k < 2; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			nums[k] = nums[k]*10 + int(c-'0')
		case c == '.':
			k++
		default:
			return nums[0], nums[1]
		}
	}
	return nums[0], nums[1]
}

// setupOffload probes and enables the offloads on a bound socket: GSO if
// the kernel knows the UDP_SEGMENT option, GRO if it accepts UDP_GRO.
func (s *socket) setupOffload(fd int) {
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
		s.gsoSegs.Store(kernelGSOSegments())
	}
	if unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
		s.gro = true
	}
}

// gsoFailed decides what a failed send of a message of segs segments (cut
// by a socket allowing maxSegs) means. EIO is the kernel refusing GSO on a
// route whose device cannot checksum (or on an IPsec route); EINVAL is a
// message over the kernel's segment limit, or GSO being otherwise refused;
// EMSGSIZE (EINVAL before Linux 6.14) is a segment larger than the path
// MTU, which a plain send would fragment. It returns true when the datagrams
// of the message should be sent again: with fewer segments per message if
// the limit was the problem, else without GSO, which it then switches off
// for this socket (logging that once).
func (s *socket) gsoFailed(errno syscall.Errno, segs, maxSegs int) bool {
	switch errno {
	case unix.EINVAL:
		if segs > gsoSegmentsOld && maxSegs > gsoSegmentsOld {
			s.gsoSegs.CompareAndSwap(int32(maxSegs), gsoSegmentsOld)
			return true
		}
	case unix.EIO, unix.EMSGSIZE:
	default:
		return false
	}
	if s.gsoSegs.Swap(0) != 0 {
		s.tr.Stats.GSODisabled.Add(1)
		s.gsoOffOnce.Do(func() {
			fam := "IPv4"
			if s.v6 {
				fam = "IPv6"
			}
			s.tr.logger().Warn("udp: segmentation offload (UDP_SEGMENT) failed; sending without it",
				"family", fam, "port", s.port, "err", errno)
		})
	}
	return true
}

// groSize returns the segment size of a UDP_GRO control message among the
// control messages in b, or 0 if there is none. b is aligned for a cmsghdr.
func groSize(b []byte) int {
	for len(b) >= cmsgDataOff {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < cmsgDataOff || l > len(b) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= cmsgDataOff+4 {
			return int(int32(binary.NativeEndian.Uint32(b[cmsgDataOff:])))
		}
		next := unix.CmsgSpace(l - cmsgDataOff)
		if next >= len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}

// putGSOCmsg writes a UDP_SEGMENT control message into b, which is aligned
// for a cmsghdr and gsoCmsgSpace long.
func putGSOCmsg(b []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.SetLen(gsoCmsgLen)
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	binary.NativeEndian.PutUint16(b[cmsgDataOff:], size)
}

// logger returns the transport's logger.
func (t *Transport) logger() *slog.Logger {
	if l := t.log.Load(); l != nil {
		return l
	}
	return discard
}

var discard = slog.New(slog.DiscardHandler)

// SetLogger sets where the transport reports trouble it works around, such
// as an offload it had to switch off. Without it (or with nil) such
// reports are discarded, as with every Logger option in Warren.
func (t *Transport) SetLogger(l *slog.Logger) { t.log.Store(l) }
