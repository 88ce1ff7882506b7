// Command embedbench is the measuring half of bench/embed.sh: the same
// program built twice, with Warren's embeddable node (warren.go) and, in
// a throwaway module, with tsnet from tailscale.com (tsnet.go, build tag
// "ignore" here so the main module never links it). Modes:
//
//	embedbench host              serve plain sockets: HTTP /bytes?n=N on :8080, a TCP sink on :5201
//	embedbench embed FLAGS       an embedded node serving the same on the mesh, driven by
//	                             commands on stdin: "get URL [TIMEOUT]", "stream HOST:PORT DURATION",
//	                             "cpu", "rss", "profile NAME", "endprofile", "quit"; one result line
//	                             each on stdout
//	embedbench client MODE ...   get/stream over the host's sockets or a SOCKS5 proxy
//
// Results are "ok KEY=VALUE ..." lines; CPU is the process's own user+
// system time (getrusage), RSS from /proc/self/status.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"
)

// embedded is what the bench needs of an embedded node.
type embedded interface {
	Up(ctx context.Context) error
	Listen(network, addr string) (net.Listener, error)
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	HTTPClient() *http.Client
	Close() error
	Addr4() string // the node's tunnel IPv4 address
}

// newEmbedded is set by the product's file.
var newEmbedded func(dir, serverURL, authKey, hostname string) (embedded, error)

var zeros = make([]byte, 256<<10)

// serve serves /bytes?n=N and a TCP sink on the listeners.
func serve(httpLn, sinkLn net.Listener) {
	go func() {
		for {
			c, err := sinkLn.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(zeros)))
			if _, err := w.Write(zeros[:k]); err != nil {
				return
			}
			n -= k
		}
	})}
	go srv.Serve(httpLn)
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// get downloads url within timeout and reports bytes and seconds.
func get(hc *http.Client, url string, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "err " + err.Error()
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return "err " + err.Error()
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil {
		return "err " + err.Error()
	}
	return fmt.Sprintf("ok bytes=%d seconds=%.3f", n, time.Since(start).Seconds())
}

// stream writes to addr for d and reports bytes and seconds.
func stream(dial dialFunc, addr string, d time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		return "err " + err.Error()
	}
	defer c.Close()
	start := time.Now()
	c.SetWriteDeadline(start.Add(d))
	var n int64
	for {
		k, err := c.Write(zeros)
		n += int64(k)
		if err != nil {
			break
		}
	}
	return fmt.Sprintf("ok bytes=%d seconds=%.3f", n, time.Since(start).Seconds())
}

func cpu() string {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	return fmt.Sprintf("ok cpu_s=%.3f", s)
}

func rss() string {
	b, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmRSS:", "VmHWM:"} {
			if strings.HasPrefix(l, k) {
				f := strings.Fields(l)
				out = append(out, strings.ToLower(strings.TrimSuffix(k, ":"))+"_kb="+f[1])
			}
		}
	}
	return "ok " + strings.Join(out, " ")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: embedbench host|embed|client ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "host":
		err = runHost()
	case "embed":
		err = runEmbed(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedbench:", err)
		os.Exit(1)
	}
}

func runHost() error {
	h, err := net.Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	s, err := net.Listen("tcp", ":5201")
	if err != nil {
		return err
	}
	serve(h, s)
	fmt.Println("ready")
	select {}
}

func runEmbed(args []string) error {
	fs := flag.NewFlagSet("embed", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory")
	server := fs.String("server", "", "control URL")
	hostname := fs.String("hostname", "emb", "name")
	profile := fs.String("cpuprofile", "", "write a CPU profile of each get and stream command, and of what is served between \"profile NAME\" and \"endprofile\", to PREFIX-N-NAME.pprof")
	fs.Parse(args)
	n, err := newEmbedded(*dir, *server, os.Getenv("BENCH_AUTH_KEY"), *hostname)
	if err != nil {
		return err
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = n.Up(ctx)
	cancel()
	if err != nil {
		return err
	}
	h, err := n.Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	s, err := n.Listen("tcp", ":5201")
	if err != nil {
		return err
	}
	serve(h, s)
	fmt.Println("ready", n.Addr4())
	serving := func() {}
	defer func() { serving() }()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var res string
		stop := func() {}
		if f[0] == "get" || f[0] == "stream" {
			stop = startProfile(*profile, f[0])
		}
		switch {
		case f[0] == "get" && (len(f) == 2 || len(f) == 3):
			timeout := time.Hour
			if len(f) == 3 {
				if timeout, err = time.ParseDuration(f[2]); err != nil {
					res = "err " + err.Error()
					break
				}
			}
			res = get(n.HTTPClient(), f[1], timeout)
		case f[0] == "stream" && len(f) == 3:
			d, perr := time.ParseDuration(f[2])
			if perr != nil {
				res = "err " + perr.Error()
			} else {
				res = stream(n.Dial, f[1], d)
			}
		case f[0] == "cpu":
			res = cpu()
		case f[0] == "rss":
			res = rss()
		case f[0] == "profile" && len(f) == 2:
			// A profile of what the node serves meanwhile (tests
			// driven from the other side), until "endprofile".
			serving()
			serving = startProfile(*profile, f[1])
			res = "ok"
		case f[0] == "endprofile":
			serving()
			serving = func() {}
			res = "ok"
		case f[0] == "quit":
			return nil
		default:
			res = "err unknown command"
		}
		stop()
		fmt.Println(res)
	}
	return sc.Err()
}

var profiles int

// startProfile starts a CPU profile (PREFIX-N-NAME.pprof) if prefix is
// set; the function it returns stops it.
func startProfile(prefix, name string) func() {
	if prefix == "" {
		return func() {}
	}
	profiles++
	f, err := os.Create(fmt.Sprintf("%s-%d-%s.pprof", prefix, profiles, name))
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedbench: cpuprofile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "embedbench: cpuprofile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// runClient: client [-socks5 ADDR] get URL | stream HOST:PORT DURATION,
// then prints the result and its own CPU.
func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	socks := fs.String("socks5", "", "SOCKS5 proxy (names resolved by the proxy)")
	fs.Parse(args)
	var dial dialFunc = (&net.Dialer{}).DialContext
	if *socks != "" {
		d, err := proxy.SOCKS5("tcp", *socks, nil, proxy.Direct)
		if err != nil {
			return err
		}
		cd, ok := d.(proxy.ContextDialer)
		if !ok {
			return errors.New("no context dialer")
		}
		dial = cd.DialContext
	}
	a := fs.Args()
	var res string
	switch {
	case len(a) == 2 && a[0] == "get":
		res = get(&http.Client{Transport: &http.Transport{DialContext: dial}}, a[1], time.Hour)
	case len(a) == 3 && a[0] == "stream":
		d, err := time.ParseDuration(a[2])
		if err != nil {
			return err
		}
		res = stream(dial, a[1], d)
	default:
		return errors.New("client [-socks5 ADDR] get URL | stream HOST:PORT DURATION")
	}
	fmt.Println(res, strings.TrimPrefix(cpu(), "ok "))
	return nil
}
