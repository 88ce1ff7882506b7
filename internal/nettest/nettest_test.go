package nettest

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestVethUDPBetweenNamespaces(t *testing.T) {
	a := NewNS(t, "wna")
	b := NewNS(t, "wnb")
	Veth(t, a, "veth-a", []string{"198.18.0.1/24", "fd00:18::1/64"},
		b, "veth-b", []string{"198.18.0.2/24", "fd00:18::2/64"})

	for _, tc := range []struct{ network, listen, peer string }{
		{"udp4", "198.18.0.2:0", "198.18.0.1"},
		{"udp6", "[fd00:18::2]:0", "fd00:18::1"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			var srv *net.UDPConn
			if err := b.Do(func() error {
				addr, err := net.ResolveUDPAddr(tc.network, tc.listen)
				if err != nil {
					return err
				}
				srv, err = net.ListenUDP(tc.network, addr)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()

			var cli *net.UDPConn
			if err := a.Do(func() error {
				var err error
				cli, err = net.DialUDP(tc.network, nil, srv.LocalAddr().(*net.UDPAddr))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer cli.Close()

			if _, err := cli.Write([]byte("hello " + tc.network)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(buf[:n]); got != "hello "+tc.network {
				t.Fatalf("got %q", got)
			}
			if from.IP.String() != tc.peer {
				t.Fatalf("datagram from %v, want %s", from, tc.peer)
			}
		})
	}

	if _, err := exec.LookPath("ping"); err == nil {
		a.Run(t, "ping", "-c", "1", "-W", "5", "198.18.0.2")
		a.Run(t, "ping", "-6", "-c", "1", "-W", "5", "fd00:18::2")
	} else {
		t.Log("no ping tool; connectivity checked with UDP only")
	}
}

func TestDoSwitchesAndRestores(t *testing.T) {
	ns := NewNS(t, "wnd")
	ns.Run(t, "ip", "link", "add", "wdummy0", "type", "veth", "peer", "name", "wdummy1")

	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := ns.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		_, err = net.InterfaceByName("wdummy0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Fatalf("Do ran in the caller's namespace %s", self)
	}
	if _, err := net.InterfaceByName("wdummy0"); err == nil {
		t.Fatal("interface created in the namespace is visible outside it")
	}
	// Many calls in a row must all run inside and leave every thread home.
	for i := 0; i < 20; i++ {
		if err := ns.Do(func() error {
			_, err := net.InterfaceByName("wdummy0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != self {
		t.Fatalf("caller's thread moved to %s", now)
	}
}

func TestStartAndOutput(t *testing.T) {
	ns := NewNS(t, "wns")
	out, err := ns.Output("ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "lo:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("fresh namespace should only have lo:\n%s", out)
	}
	cmd := ns.Start(t, "sleep", "60")
	if cmd.Process == nil {
		t.Fatal("no process")
	}
	if _, err := ns.Output("false"); err == nil {
		t.Fatal("Output of a failing command returned no error")
	}
}
