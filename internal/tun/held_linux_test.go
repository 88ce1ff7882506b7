package tun

import (
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/nettest"
)

// TestPollerHeldLost: a reader parked waiting for the queue (the engine's
// readTUN in WaitRead, or a plain Read) while, with one P, the busy
// goroutine's TryRead (the receive routine's pollTUN) takes what arrived and
// leaves a super-packet that did not fit in t.held. The queue is then empty:
// the readiness event the arrivals queued in epoll is dropped when the
// runtime next calls epoll_wait (epoll re-polls the file, which is no longer
// readable), and the held packet is in no queue, so no event will announce
// it. The waiter stays parked until some other packet arrives, though a
// TryRead would return the held one at once.
func TestPollerHeldLost(t *testing.T) {
	for _, waiter := range []string{"WaitRead", "Read"} {
		t.Run(waiter, func(t *testing.T) { testPollerHeldLost(t, waiter) })
	}
}

func testPollerHeldLost(t *testing.T, waiter string) {
	needTUN(t)
	// One P, as on the hosts the inline datapath is for: nothing below lets
	// the waiter run until the test blocks (the sends are raw system calls,
	// and so is TryRead).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	t.Setenv(EnvNoOffload, "0")
	ns := nettest.NewNS(t, "wth")
	dev := newTUN(t, ns, "wgh0", 1420).(*linuxDevice)
	if !dev.mode.vnetHdr || !dev.mode.uso {
		t.Skip("needs offload mode with USO")
	}
	// No IPv6 on the interface: the kernel's chatter would wake the waiter
	// by chance.
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.wgh0.disable_ipv6=1")
	setUp(t, ns, "wgh0", true)
	nettest.AddAddr(t, ns, "wgh0", "100.64.0.1/24")
	dst := netip.AddrPortFrom(peerAddr4, 9)

	// A socket of the namespace that sends 10-segment UDP super-packets.
	sock := dialUSO(t, ns, dst, 1000)
	rc, err := sock.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 10*1000)

	// The waiter drains the queue and parks.
	woke := make(chan int, 16)
	go func() {
		bufs, sizes := makeBufs(offloadBatchSize)
		for {
			var n int
			var err error
			if waiter == "WaitRead" {
				// The engine's readTUN: TryRead, WaitRead when empty.
				for {
					if n, err = dev.TryRead(bufs, sizes, offset); n > 0 || err != nil {
						break
					}
					if err = dev.WaitRead(); err != nil {
						break
					}
				}
			} else {
				n, err = dev.Read(bufs, sizes, offset)
			}
			if err != nil {
				close(woke)
				return
			}
			woke <- n
		}
	}()
	time.Sleep(100 * time.Millisecond)
	for len(woke) > 0 {
		<-woke
	}

	// Two super-packets arrive.
	var errno syscall.Errno
	rc.Control(func(fd uintptr) {
		for range 2 {
			if _, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&payload[0])), uintptr(len(payload))); e != 0 {
				errno = e
			}
		}
	})
	if errno != 0 {
		t.Fatalf("send: %v", errno)
	}
	// The busy goroutine's pollTUN takes them: its buffers hold the first
	// super-packet but not the second, which is kept in t.held.
	pb, ps := makeBufs(15)
	n, err := dev.TryRead(pb, ps, offset)
	// (Whether the second was kept is not checked here: the waiter, once
	// woken, may already be reading it.)
	if err != nil || n != 10 {
		t.Fatalf("poll TryRead = %d, %v, want the first super-packet's 10 packets", n, err)
	}

	select {
	case n := <-woke:
		t.Logf("the waiter read %d packets", n)
	case <-time.After(10 * time.Second):
		n, err := dev.TryRead(pb, ps, offset) // what the waiter should have got
		t.Fatalf("%s still waiting after 10s while a super-packet is held (a TryRead now returns %d packets, %v)", waiter, n, err)
	}
}
