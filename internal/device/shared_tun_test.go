package device

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/udp"
)

// TestSharedTUNInline: a queue passed in by file (tun.CreateFromFile, not
// read raw) with the inline datapath. Its TryRead always returns 0 and its
// WaitRead returns at once, so readTUN must not take the Poller path.
func TestSharedTUNInline(t *testing.T) {
	nettest.NeedNetns(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip(err)
	}
	ns := nettest.NewNS(t, "wds")
	var td tun.Device
	if err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("wgs0")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return err
		}
		td, err = tun.CreateFromFile(os.NewFile(uintptr(fd), "tun"), 1420)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.wgs0.disable_ipv6=1")
	ns.Run(t, "ip", "link", "set", "wgs0", "up")
	nettest.AddAddr(t, ns, "wgs0", "100.64.0.1/24")

	d := New(td, udp.New(), Options{RunToCompletion: true})
	defer d.Close()

	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	time.Sleep(300 * time.Millisecond)
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	t.Logf("CPU used by the idle device in 300ms: %v", cpu)

	// A packet the host routes into the TUN is read (and, there being no
	// peer, dropped as having no route).
	if err := ns.Do(func() error {
		c, err := net.Dial("udp", "100.64.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats.DropNoRoute.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if d.Stats.DropNoRoute.Load() == 0 {
		t.Errorf("the packet queued on the TUN was never read")
	}
	if cpu > 150*time.Millisecond {
		t.Errorf("the idle device used %v of CPU in 300ms: readTUN spins", cpu)
	}
}

// TestTUNDeletedInline: with the inline datapath (TryRead + WaitRead), the
// TUN reader notices the interface being deleted while it waits.
func TestTUNDeletedInline(t *testing.T) {
	for _, plain := range []string{"0", "1"} {
		t.Run("nooffload="+plain, func(t *testing.T) {
			nettest.NeedNetns(t)
			t.Setenv(tun.EnvNoOffload, plain)
			ns := nettest.NewNS(t, "wdd")
			var td tun.Device
			if err := ns.Do(func() (err error) { td, err = tun.Create("wgd0", 1420); return err }); err != nil {
				t.Fatal(err)
			}
			d := New(td, udp.New(), Options{RunToCompletion: true})
			defer d.Close()
			if d.tunPoller() == nil {
				t.Fatal("no poller")
			}
			time.Sleep(100 * time.Millisecond) // readTUN waits
			ns.Run(t, "ip", "link", "del", "wgd0")
			select {
			case <-d.TUNGone():
			case <-time.After(5 * time.Second):
				t.Fatal("TUNGone not closed after the interface was deleted")
			}
			// The receive routines stop polling the failed TUN (each
			// poll would make and log an error).
			if a := testing.AllocsPerRun(100, func() { d.pollTUN(d.tunPoller()) }); a != 0 {
				t.Fatalf("%v allocs per pollTUN of a TUN that is gone", a)
			}
		})
	}
}

// TestPollTUNAllocs: pollTUN on an idle real TUN does not allocate.
func TestPollTUNAllocs(t *testing.T) {
	nettest.NeedNetns(t)
	ns := nettest.NewNS(t, "wda")
	var td tun.Device
	if err := ns.Do(func() (err error) { td, err = tun.Create("wga0", 1420); return err }); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.wga0.disable_ipv6=1")
	d := New(td, udp.New(), Options{RunToCompletion: true})
	defer d.Close()
	p := d.tunPoller()
	d.pollTUN(p)
	if a := testing.AllocsPerRun(1000, func() { d.pollTUN(p) }); a != 0 {
		t.Fatalf("%v allocs per pollTUN", a)
	}
}
