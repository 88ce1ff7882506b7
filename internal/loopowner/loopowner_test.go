package loopowner

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:0413":                         "127.0.0.1:1043",
		"00000000000000000000000001000000:1F90": "[::1]:8080",
		"0000000000000000FFFF00000100007F:0050": "[::ffff:127.0.0.1]:80",
	} {
		got, err := parseAddr(in)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007:0413", "0100007F:zz", "01:0413"} {
		if _, err := parseAddr(bad); err == nil {
			t.Errorf("parseAddr(%q) accepted", bad)
		}
	}
}

// TestUIDOfOwnConnection: a connection from this process, over IPv4 and
// IPv6 loopback, belongs to this process's user.
func TestUIDOfOwnConnection(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if uid, err := UID(s); err != nil || uid != os.Geteuid() {
			t.Fatalf("%s: UID = %d, %v; want %d", addr, uid, err, os.Geteuid())
		}
	}
}

// TestListenerRefusesOtherUsers: a connection from a process of another
// user (run with setpriv as uid 1) is closed; one of the allowed user
// passes. Needs root to switch users.
func TestListenerRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 4)
	l := &Listener{Listener: inner, UID: 4242, Refused: func() { refused <- struct{}{} }}
	defer l.Close()
	accepted := make(chan int, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			uid, _ := UID(c)
			accepted <- uid
			c.Close()
		}
	}()
	port := strconv.Itoa(inner.Addr().(*net.TCPAddr).Port)
	connect := func(uid string) {
		cmd := exec.Command("setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port+"; read -t 10 <&3")
		if out, err := cmd.CombinedOutput(); err != nil && len(out) > 0 {
			t.Logf("client %s: %v: %s", uid, err, out)
		}
	}
	connect("1") // daemon: not allowed
	select {
	case <-refused:
	case uid := <-accepted:
		t.Fatalf("a connection of uid %d was accepted", uid)
	case <-time.After(30 * time.Second):
		t.Fatal("the other user's connection was neither refused nor accepted")
	}
	connect("4242")
	select {
	case uid := <-accepted:
		if uid != 4242 {
			t.Fatalf("accepted uid %d", uid)
		}
	case <-refused:
		t.Fatal("the allowed user was refused")
	case <-time.After(30 * time.Second):
		t.Fatal("the allowed user's connection was not accepted")
	}
}
