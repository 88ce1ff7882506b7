package mesh

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// fileCmd runs `warren file ARGS --socket SOCK` on n.
func (n *node) fileCmd(args ...string) (string, error) {
	return warren(n.ns, append(append([]string{"file"}, args...), "--socket", n.sock)...)
}

func (n *node) fileList(t *testing.T) *localapi.FileList {
	t.Helper()
	out, err := n.fileCmd("list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var l localapi.FileList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("file list --json: %v\n%s", err, out)
	}
	return &l
}

func (n *node) inbox() string { return filepath.Join(n.dir, "state", "files") }

// genFile writes size pseudo-random bytes to path and returns their SHA-256.
func genFile(t *testing.T, path string, size int64, seed byte) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{seed})
	hs := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, hs), 1<<20)
	if _, err := io.CopyN(w, r, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hs.Sum(nil))
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hs.Sum(nil))
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// dropLab: alice's nodes a and b, mallory's node m.
func dropLab(t *testing.T) (*lab, *node, *node, *node) {
	// Senders give up on a stalled path after 2 s (default 10 s), so the
	// link-cut case resumes quickly.
	t.Setenv("WARREN_DROP_STALL", "2s")
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	l.mustAdmin("users", "create", "mallory")
	ka := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	km := l.mustAdmin("authkeys", "create", "--user", "mallory")
	a, b, m := l.startNode("a"), l.startNode("b"), l.startNode("m")
	parallel(t, []*node{a, b, m}, func(n *node) error {
		k := ka
		if n == m {
			k = km
		}
		_, err := n.up(k)
		return err
	})
	waitPeers(t, []*node{a, b, m}, 2, 10*time.Second)
	bV4, _ := b.ips()
	if !wait.Poll(5*time.Second, func() bool { return a.pingOnce(bV4, time.Second) == nil }) {
		t.Fatal("a cannot reach b")
	}
	return l, a, b, m
}

// TestDrop: file drop end to end through the real binary: a 1 GiB file
// and a batch of 100 small files arrive intact; transfers killed at 50%
// (the sending CLI, then the link) resume without sending the first half
// again (the receiver's count of bytes written equals the file size);
// hostile names are refused on the wire and sanitised by the CLI; a node
// of another user is refused; a full disk fails cleanly on both ends.
func TestDrop(t *testing.T) {
	l, a, b, m := dropLab(t)
	src, out := t.TempDir(), t.TempDir()

	t.Run("1GiB", func(t *testing.T) {
		path := filepath.Join(src, "big.bin")
		sum := genFile(t, path, 1<<30, 1)
		start := time.Now()
		res := l.must(a.ns, "file", "cp", path, "b:", "--socket", a.sock)
		el := time.Since(start)
		t.Logf("%s (%.0f MB/s with hashing, end to end)", res, float64(1<<30)/el.Seconds()/1e6)
		os.Remove(path)
		got := l.must(b.ns, "file", "get", out, "--socket", b.sock)
		if got != filepath.Join(out, "big.bin") || sha256File(t, got) != sum {
			t.Fatalf("get printed %q; hash mismatch or missing", got)
		}
		os.Remove(got)
		if len(b.fileList(t).Files) != 0 {
			t.Fatal("inbox not empty after get")
		}
	})

	t.Run("100files", func(t *testing.T) {
		dir := filepath.Join(src, "batch")
		os.Mkdir(dir, 0o755)
		sums := map[string]string{}
		args := []string{"file", "cp", "--socket", a.sock}
		for i := range 100 {
			p := filepath.Join(dir, fmt.Sprintf("f%03d.dat", i))
			sums[filepath.Base(p)] = genFile(t, p, int64(i*653), byte(i))
			args = append(args, p)
		}
		start := time.Now()
		l.must(a.ns, append(args, "b:")...)
		t.Logf("100 files sent in %v", time.Since(start).Round(time.Millisecond))
		dst := filepath.Join(out, "batch")
		os.Mkdir(dst, 0o755)
		l.must(b.ns, "file", "get", "--socket", b.sock, dst)
		for name, sum := range sums {
			if got := sha256File(t, filepath.Join(dst, name)); got != sum {
				t.Errorf("%s: hash mismatch", name)
			}
		}
	})

	// resume sends a 256 MiB file, interrupts it once the receiver holds
	// half, and checks it completes with the receiver writing each byte
	// once.
	resume := func(t *testing.T, name string, interrupt func(cp *exec.Cmd), again bool) {
		const size = 256 << 20
		path := filepath.Join(src, name)
		sum := genFile(t, path, size, 9)
		before := b.fileList(t).ReceivedBytes
		cp := exec.Command("ip", "netns", "exec", a.ns.Name, warrenBin, "file", "cp", "--socket", a.sock, path, "b:")
		var cpOut strings.Builder
		cp.Stdout, cp.Stderr = &cpOut, &cpOut
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cp.Wait() }()
		partial := filepath.Join(b.inbox(), "."+name+".partial")
		if !wait.Poll(30*time.Second, func() bool { return fileSize(partial) >= size/2 }) {
			cp.Process.Kill()
			t.Fatalf("partial never reached half: %s", cpOut.String())
		}
		interrupt(cp)
		at := fileSize(partial)
		var res string
		if again {
			<-done
			res = l.must(a.ns, "file", "cp", "--socket", a.sock, path, "b:")
		} else {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("cp after the link came back: %v\n%s", err, cpOut.String())
				}
			case <-time.After(60 * time.Second):
				cp.Process.Kill()
				t.Fatalf("cp did not finish after the link came back\n%s", cpOut.String())
			}
			res = cpOut.String()
		}
		wrote := b.fileList(t).ReceivedBytes - before
		t.Logf("interrupted at %d MiB; %s; receiver wrote %d bytes for a file of %d", at>>20, strings.TrimSpace(res), wrote, size)
		if wrote != size {
			t.Errorf("receiver wrote %d bytes for a %d-byte file: bytes were sent twice", wrote, size)
		}
		if again && !strings.Contains(res, "resumed at") {
			t.Errorf("second cp did not resume: %s", res)
		}
		dst := filepath.Join(out, "resume-"+name)
		os.Mkdir(dst, 0o755)
		got := l.must(b.ns, "file", "get", "--socket", b.sock, dst)
		if sha256File(t, got) != sum {
			t.Fatal("resumed file differs")
		}
		os.Remove(got)
		os.Remove(path)
	}
	t.Run("resume-sender-killed", func(t *testing.T) {
		resume(t, "killed.bin", func(cp *exec.Cmd) { cp.Process.Kill() }, true)
	})
	t.Run("resume-link-cut", func(t *testing.T) {
		resume(t, "cut.bin", func(*exec.Cmd) {
			// Drop everything a sends on its underlay for 3 s: the
			// sender notices the stall, and resumes once the link is back.
			a.ns.Run(t, "nft", "add table inet cut { chain out { type filter hook output priority 0; oifname eth0 drop; }; }")
			time.Sleep(3 * time.Second)
			a.ns.Run(t, "nft", "delete table inet cut")
		}, false)
	})

	t.Run("hostile-names", func(t *testing.T) {
		bV4, _ := b.ips()
		for _, name := range []string{"../../etc/passwd", "a/b", "CON", "x\x00y", "evil\u202Etxt.exe", ".bashrc", strings.Repeat("n", 300)} {
			code, body := rawPut(t, a, bV4, name, "hello")
			if code != http.StatusBadRequest && (code < 300 || code >= 400) {
				t.Errorf("raw PUT %q: %d %s", name, code, body)
			}
			t.Logf("raw PUT %q: %d %s", name, code, strings.TrimSpace(body))
		}
		if ents, _ := os.ReadDir(b.inbox()); len(ents) != 0 {
			t.Fatalf("inbox not empty after hostile raw PUTs: %v", ents)
		}
		// Through the CLI, names are sanitised before they leave.
		p := filepath.Join(src, "payload")
		os.WriteFile(p, []byte("payload"), 0o644)
		want := map[string]string{"../../etc/passwd": "_.._etc_passwd", "CON": "_CON", "evil\u202Etxt.exe": "evil_txt.exe", "a/b": "a_b"}
		for in, clean := range want {
			res := l.must(a.ns, "file", "cp", "--socket", a.sock, "--name", in, p, "b:")
			if !strings.HasPrefix(res, "sent "+clean+" to b") {
				t.Errorf("--name %q: %s", in, res)
			}
		}
		var names []string
		for _, f := range b.fileList(t).Files {
			names = append(names, f.Name)
		}
		t.Logf("stored: %q", names)
		if len(names) != len(want) {
			t.Fatalf("stored %q", names)
		}
		dst := filepath.Join(out, "hostile")
		os.Mkdir(dst, 0o755)
		l.must(b.ns, "file", "get", "--socket", b.sock, dst)
		if ents, _ := os.ReadDir(dst); len(ents) != len(want) {
			t.Fatalf("got %v", ents)
		}
	})

	// A web page in a browser on a rebinds a name of its own to b's
	// tunnel address: its PUT comes from a (an allowed sender) but with
	// the page's Host, and must be refused; b's own names are served.
	t.Run("dns-rebinding", func(t *testing.T) {
		bV4, bV6 := b.ips()
		for _, c := range []struct{ addr, host string }{
			{bV4, "evil.example:41642"}, {bV4, "7f000001.rbndr.us:41642"}, {bV6, "evil.example"},
		} {
			code, body := rawPutHost(t, a, c.addr, "rebound.txt", "pushed by a web page", c.host)
			if code != http.StatusMisdirectedRequest {
				t.Errorf("PUT to %s with Host %q: %d %s", c.addr, c.host, code, body)
			}
		}
		if n := len(b.fileList(t).Files); n != 0 {
			t.Fatalf("%d files stored through a rebound name", n)
		}
		st, err := b.status()
		if err != nil {
			t.Fatal(err)
		}
		for i, host := range []string{st.Self.DNSName, st.Self.Name + ":41642"} {
			if code, body := rawPutHost(t, a, bV4, fmt.Sprintf("named%d.txt", i), "hello", host); code != http.StatusOK {
				t.Errorf("PUT with b's own name %q: %d %s", host, code, body)
			}
		}
		l.must(b.ns, "file", "get", "--socket", b.sock, t.TempDir())
	})

	t.Run("other-user", func(t *testing.T) {
		p := filepath.Join(src, "from-mallory")
		os.WriteFile(p, []byte("hi"), 0o644)
		res, err := warren(m.ns, "file", "cp", "--socket", m.sock, p, "b:")
		msg := strings.TrimSpace(res)
		if err == nil || !strings.Contains(msg, "belongs to user mallory; only alice's machines may send files here") || strings.Contains(msg, "\n") {
			t.Fatalf("mallory's send: %v\n%s", err, msg)
		}
		t.Logf("mallory: %s", msg)
		if len(b.fileList(t).Files) != 0 {
			t.Fatal("mallory's file stored")
		}
	})

	t.Run("disk-full", func(t *testing.T) {
		// b's inbox on a 16 MiB tmpfs, mounted inside the mount namespace
		// of b's daemon (`ip netns exec` gave it its own).
		pid := fmt.Sprint(b.cmd.Process.Pid)
		inDaemon := func(args ...string) (string, error) {
			out, err := exec.Command("nsenter", append([]string{"-t", pid, "-m"}, args...)...).CombinedOutput()
			return string(out), err
		}
		if out, err := inDaemon("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", b.inbox()); err != nil {
			t.Fatalf("mount: %v %s", err, out)
		}
		t.Cleanup(func() { inDaemon("umount", "-l", b.inbox()) })
		big := filepath.Join(src, "toobig")
		genFile(t, big, 32<<20, 3)
		res, err := warren(a.ns, "file", "cp", "--socket", a.sock, big, "b:")
		if err == nil || !strings.Contains(res, "disk is full") {
			t.Fatalf("32 MiB into 16 MiB: %v %s", err, res)
		}
		t.Logf("refused up front: %s", strings.TrimSpace(res))
		// Two 10 MiB files at once: each fits alone, not both.
		var wg sync.WaitGroup
		outs := make([]string, 2)
		errs := make([]error, 2)
		for i := range 2 {
			p := filepath.Join(src, fmt.Sprintf("ten%d", i))
			genFile(t, p, 10<<20, byte(20+i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = warren(a.ns, "file", "cp", "--socket", a.sock, p, "b:")
			}()
		}
		wg.Wait()
		failed := 0
		for i := range 2 {
			t.Logf("concurrent %d: %v %s", i, errs[i], strings.TrimSpace(outs[i]))
			if errs[i] != nil {
				failed++
				if !strings.Contains(outs[i], "disk is full") {
					t.Errorf("failure %d is not a clear disk-full error: %s", i, outs[i])
				}
			}
		}
		if failed == 0 {
			t.Fatal("20 MiB fitted into a 16 MiB tmpfs")
		}
		if ls, err := inDaemon("ls", "-A", b.inbox()); err != nil || strings.Contains(ls, "partial") {
			t.Errorf("partial left (%v): %s", err, ls)
		}
		if got := len(b.fileList(t).Files); got != 2-failed {
			t.Errorf("%d files waiting, want %d", got, 2-failed)
		}
	})
}

// rawPut sends a PUT with a raw file name to b's peer API from a's
// namespace, as a hostile node would, and returns the status and body.
func rawPut(t *testing.T, a *node, addr, name, body string) (int, string) {
	t.Helper()
	return rawPutHost(t, a, addr, name, body, net.JoinHostPort(addr, "41642"))
}

// rawPutHost is rawPut with the given Host header.
func rawPutHost(t *testing.T, a *node, addr, name, body, host string) (int, string) {
	t.Helper()
	var code int
	var text string
	err := a.ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "41642"), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		sum := sha256.Sum256([]byte(body))
		fmt.Fprintf(c, "PUT /v1/files/%s HTTP/1.1\r\nHost: %s\r\nWarren-Size: %d\r\nWarren-Sha256: %x\r\nWarren-Offset: 0\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			url.PathEscape(name), host, len(body), sum, len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		code, text = resp.StatusCode, string(b)
		return nil
	})
	if err != nil {
		t.Fatalf("raw PUT %q: %v", name, err)
	}
	return code, text
}

// TestDropBench (WARREN_BENCH_DROP=1, see bench/drop.sh) measures a 1 GiB
// file drop against iperf3's TCP throughput over the same tunnel, in
// alternation (iperf3 for 5 s, then the file), so that each pair shares
// the machine's load of the moment; WARREN_BENCH_DROP_ROUNDS pairs (2).
func TestDropBench(t *testing.T) {
	if os.Getenv("WARREN_BENCH_DROP") != "1" {
		t.Skip("set WARREN_BENCH_DROP=1 (bench/drop.sh)")
	}
	rounds := 2
	if n, err := strconv.Atoi(os.Getenv("WARREN_BENCH_DROP_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	l, a, b, _ := dropLab(t)
	bV4, _ := b.ips()
	b.ns.Start(t, "iperf3", "-s", "-B", bV4)
	time.Sleep(500 * time.Millisecond)
	iperf := func() float64 {
		out, err := a.ns.Output("iperf3", "-c", bV4, "-t", "5", "-J")
		if err != nil {
			t.Fatalf("iperf3: %v\n%s", err, out)
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		json.Unmarshal([]byte(out), &r)
		return r.End.SumReceived.BitsPerSecond / 8 / 1e6
	}
	src, dst := t.TempDir(), t.TempDir()
	var sumDrop, sumTCP float64
	for i := range rounds {
		path := filepath.Join(src, fmt.Sprintf("bench%d.bin", i))
		genFile(t, path, 1<<30, byte(i))
		exec.Command("sync").Run() // the file generated is not written back during the runs
		tcp := iperf()
		start := time.Now()
		l.must(a.ns, "file", "cp", "--socket", a.sock, path, "b:")
		el := time.Since(start)
		os.Remove(path)
		drop := float64(1<<30) / el.Seconds() / 1e6
		got := l.must(b.ns, "file", "get", "--socket", b.sock, dst)
		os.Remove(got)
		fmt.Printf("file drop 1 GiB: %.0f MB/s; iperf3 TCP over the tunnel just before: %.0f MB/s (%.0f%%)\n", drop, tcp, 100*drop/tcp)
		sumDrop += drop
		sumTCP += tcp
	}
	fmt.Printf("file drop mean of %d: %.0f MB/s, iperf3 %.0f MB/s (%.0f%%)\n", rounds, sumDrop/float64(rounds), sumTCP/float64(rounds), 100*sumDrop/sumTCP)
}
