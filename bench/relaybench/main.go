// Command relaybench measures the packet relay's throughput and cost: a
// relay server runs as a child process (this binary re-executed with
// -serve) on 127.0.0.1, and P pairs of real relay sessions in this process
// push WireGuard-sized packets (1420 bytes by default) from one node key to
// another as fast as the relay takes them for a fixed time. It prints the
// relayed goodput (bytes delivered to the receivers), the relay's CPU
// seconds per GB relayed (utime+stime of the child from /proc), its peak
// RSS, and the packets it dropped.
//
//	go build -o bin/relaybench ./bench/relaybench && bin/relaybench -pairs 1 -time 10s
//
// Run it alone: the machine's other load shows up in the figures.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

func key(i int) noise.PrivateKey {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return noise.NewPrivateKey(sha256.Sum256(b[:]))
}

func main() {
	serve := flag.Bool("serve", false, "internal: run the relay server child")
	pairs := flag.Int("pairs", 1, "sender/receiver session pairs")
	size := flag.Int("size", 1420, "packet size in bytes")
	dur := flag.Duration("time", 10*time.Second, "how long to send")
	flag.Parse()
	if *serve {
		if err := runServer(); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*pairs, *size, *dur); err != nil {
		log.Fatal(err)
	}
}

// runServer serves an unlimited relay on a free loopback port, prints
// "ready URL" and runs until stdin closes.
func runServer() error {
	srv, err := relayserver.NewServer(relayserver.Options{Key: key(0), Allowed: func(pubkey.Node) bool { return true },
		Rate: -1, QueuePackets: 1024, QueueBytes: 4 << 20})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(relay.Path, srv)
	go http.Serve(l, mux)
	fmt.Printf("ready http://%s\n", l.Addr())
	buf := make([]byte, 1)
	for {
		if _, err := os.Stdin.Read(buf); err != nil {
			st := srv.Stats()
			fmt.Fprintf(os.Stderr, "relay drops: no peer %d, queue full %d, rate %d\n", st.DropsNoPeer, st.DropsQueueFull, st.DropsRateLimit)
			return nil
		}
	}
}

// cpuSeconds reads utime+stime of pid from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

func peakRSS(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "?"
}

func run(pairs, size int, dur time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, "-serve")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		return err
	}
	defer child.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		return fmt.Errorf("relay child: %q %v", line, err)
	}
	url := strings.TrimSpace(strings.TrimPrefix(line, "ready "))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relayKey := pubkey.Relay{PublicKey: key(0).PublicKey()}

	var delivered atomic.Int64
	var senders, receivers []*relay.Conn
	for p := range pairs {
		s, err := relay.Dial(ctx, url, relayKey, key(1+2*p), relay.DialOptions{})
		if err != nil {
			return err
		}
		r, err := relay.Dial(ctx, url, relayKey, key(2+2*p), relay.DialOptions{})
		if err != nil {
			return err
		}
		senders, receivers = append(senders, s), append(receivers, r)
	}
	var wg sync.WaitGroup
	for _, r := range receivers {
		go func() {
			for {
				m, err := r.Recv()
				if err != nil {
					return
				}
				if m.Type == relay.MsgPacket {
					delivered.Add(int64(len(m.Data)))
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	cpu0 := cpuSeconds(child.Process.Pid)
	start := time.Now()
	stop := make(chan struct{})
	for p, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pkt := make([]byte, size)
			dst := pubkey.Node{PublicKey: key(2 + 2*p).PublicKey()}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.Send(dst, pkt); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(dur)
	got := delivered.Load()
	elapsed := time.Since(start)
	cpu := cpuSeconds(child.Process.Pid) - cpu0
	close(stop)
	for _, s := range senders {
		s.Close()
	}
	wg.Wait()
	for _, r := range receivers {
		r.Close()
	}
	gbps := float64(got) * 8 / elapsed.Seconds() / 1e9
	fmt.Printf("relay: %d pair(s), %d-byte packets, %v\n", pairs, size, dur)
	fmt.Printf("  goodput      %.2f Gbit/s (%.0f packets/s)\n", gbps, float64(got)/float64(size)/elapsed.Seconds())
	fmt.Printf("  relay CPU    %.2f s (%.0f%% of one core), %.2f CPU-s/GB\n", cpu, 100*cpu/elapsed.Seconds(), cpu/(float64(got)/1e9))
	fmt.Printf("  relay RSS    %s peak\n", peakRSS(child.Process.Pid))
	return nil
}
