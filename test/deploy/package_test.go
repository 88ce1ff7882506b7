package deploy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The files the package installs besides /usr/bin/warren and the units.
var (
	units   = []string{"warren-server.service", "warren-relay.service", "warren-daemon.service"}
	etcMode = map[string]os.FileMode{
		"/etc/warren/server.env":          0o644,
		"/etc/warren/daemon.env":          0o644,
		"/etc/warren/relay.env":           0o600, // holds the relay key
		"/etc/warren/server.json.example": 0o644,
		"/etc/warren/server.yaml.example": 0o644,
		"/etc/warren/relay.yaml.example":  0o644,
	}
)

// run runs a command and returns its combined output, failing the test
// when it does not succeed.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func installed() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "warren").Output()
	return err == nil && strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed")
}

// known reports whether dpkg knows the package at all (installed, or
// removed with its configuration left).
func known() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "warren").Output()
	return err == nil && !strings.HasSuffix(strings.TrimSpace(string(out)), "not-installed")
}

func userExists(name string) bool { return exec.Command("getent", "passwd", name).Run() == nil }

// TestDebianPackage builds the .deb, installs it with dpkg -i, checks its
// files, its units (systemd-analyze verify, no warnings) and that
// `warren version` runs, then purges it, all as CI does on a fresh Debian
// machine. It leaves nothing behind: the package is purged and the warren
// user (which a purge keeps on purpose) removed if this test created it,
// even when it fails. Concurrent runs take turns on a lock file.
func TestDebianPackage(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (scripts/install-deps.sh installs it)", tool)
		}
	}
	lock, err := os.OpenFile("/tmp/warren-package-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if known() {
		t.Fatal("a warren package is already installed on this machine; this test installs and purges its own and will not touch that one")
	}
	hadUser := userExists("warren")
	t.Cleanup(func() {
		if known() {
			if out, err := exec.Command("dpkg", "--purge", "warren").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge warren: %v\n%s", err, out)
			}
		}
		if !hadUser && userExists("warren") {
			if out, err := exec.Command("userdel", "warren").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel warren: %v\n%s", err, out)
			}
		}
	})

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, filepath.Join(root, "packaging", "build-deb.sh"), warrenBin, testVersion, t.TempDir())
	deb := strings.TrimSpace(out)
	if !strings.HasSuffix(deb, ".deb") || !strings.Contains(filepath.Base(deb), "warren_1.2.3-deploytest_") {
		t.Fatalf("build-deb.sh printed %q", out)
	}
	info := run(t, "dpkg-deb", "--field", deb, "Package", "Version", "Depends")
	for _, want := range []string{"Package: warren", "Version: 1.2.3-deploytest", "Depends: passwd"} {
		if !strings.Contains(info, want) {
			t.Fatalf("control fields lack %q:\n%s", want, info)
		}
	}

	run(t, "dpkg", "-i", deb)
	if !installed() {
		t.Fatal("dpkg -i succeeded but the package is not installed")
	}
	run(t, "dpkg", "-i", deb) // again: the upgrade path of the scripts, the user already there
	// The files, with their modes, all owned by root; the units in
	// systemd's unit directory (/lib/systemd/system on Debian 12).
	listed := run(t, "dpkg", "-L", "warren")
	files := map[string]os.FileMode{"/usr/bin/warren": 0o755}
	var paths []string
	for _, u := range units {
		for _, l := range strings.Split(listed, "\n") {
			if strings.HasSuffix(l, "/systemd/system/"+u) {
				paths = append(paths, l)
				files[l] = 0o644
			}
		}
	}
	if len(paths) != len(units) {
		t.Fatalf("units installed: %v, want %v; dpkg -L:\n%s", paths, units, listed)
	}
	for p, m := range etcMode {
		files[p] = m
	}
	// Man pages and shell completion, generated from the command
	// definitions at build time.
	for _, p := range []string{"/usr/share/man/man1/warren.1.gz", "/usr/share/man/man1/warren-admin-nodes-tag.1.gz",
		"/usr/share/man/man1/warren-server.1.gz", "/usr/share/bash-completion/completions/warren",
		"/usr/share/zsh/vendor-completions/_warren", "/usr/share/fish/vendor_completions.d/warren.fish"} {
		files[p] = 0o644
	}
	if page := run(t, "sh", "-c", "gzip -dc /usr/share/man/man1/warren-server.1.gz"); !strings.Contains(page, ".TH \"WARREN\" \"1\"") || !strings.Contains(page, `\fB--log-level\fP=info`) {
		t.Errorf("warren-server.1:\n%.600s", page)
	}
	if out := run(t, "bash", "--norc", "--noprofile", "-c", "set -e; source /usr/share/bash-completion/completions/warren; declare -F __start_warren"); strings.TrimSpace(out) != "__start_warren" {
		t.Errorf("the installed bash completion does not load: %q", out)
	}
	for p, mode := range files {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("installed file: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != mode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %04o owner %d:%d, want %04o root:root", p, fi.Mode().Perm(), st.Uid, st.Gid, mode)
		}
		if !strings.Contains(listed, p+"\n") {
			t.Errorf("dpkg -L warren does not list %s", p)
		}
	}
	conffiles := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "warren")
	for p := range etcMode {
		if !strings.Contains(conffiles, p+" ") {
			t.Errorf("%s is not a conffile: %q", p, conffiles)
		}
	}
	// The system user for the server and relay: no login, no home.
	pw := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", "warren")), ":")
	if len(pw) != 7 || pw[5] != "/nonexistent" || !strings.HasSuffix(pw[6], "nologin") {
		t.Errorf("warren user: %q", pw)
	}
	// Nothing is enabled or started.
	for _, u := range units {
		if m, _ := filepath.Glob("/etc/systemd/system/*.wants/" + u); len(m) != 0 {
			t.Errorf("%s was enabled on install: %v", u, m)
		}
	}
	// The units: systemd-analyze verify exits 0 and warns about none of
	// them (an unknown key is only a warning). The host's other units,
	// which it loads as dependencies, are not this test's business:
	// --recursive-errors=no, and only lines naming warren count.
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--recursive-errors=no"}, paths...)...)
	vout, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, vout)
	}
	for _, l := range strings.Split(string(vout), "\n") {
		if strings.Contains(l, "warren") {
			t.Errorf("systemd-analyze verify warns: %s", l)
		}
	}
	for _, u := range paths {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		wants := []string{"Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=", "RuntimeDirectory=", "ConfigurationDirectory=warren", "CapabilityBoundingSet="}
		if !strings.HasSuffix(u, "warren-daemon.service") {
			wants = append(wants, "ExecReload=/bin/kill -HUP $MAINPID") // SIGHUP re-reads the config and certificates
		}
		for _, want := range wants {
			if !strings.Contains(string(b), "\n"+want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
	}
	// The binary runs, and the example config is one it accepts (the key
	// is missing in a fresh data dir; a bad config would fail before).
	if got := run(t, "/usr/bin/warren", "version"); !strings.Contains(got, testVersion) {
		t.Errorf("warren version: %q", got)
	}
	out2, err := exec.Command("/usr/bin/warren", "server", "key", "--config", "/etc/warren/server.json.example", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "no server key at") {
		t.Errorf("the example config: %v %s", err, out2)
	}
	for _, c := range []string{"server", "relay"} {
		run(t, "/usr/bin/warren", c, "configtest", "--config", "/etc/warren/"+c+".yaml.example")
	}
	serverAsUnit(t)

	// dpkg -r keeps the configuration, --purge removes it.
	run(t, "dpkg", "-r", "warren")
	if _, err := os.Stat("/usr/bin/warren"); !os.IsNotExist(err) {
		t.Errorf("/usr/bin/warren left after dpkg -r: %v", err)
	}
	if _, err := os.Stat("/etc/warren/relay.env"); err != nil {
		t.Errorf("dpkg -r removed the configuration: %v", err)
	}
	run(t, "dpkg", "--purge", "warren")
	if known() {
		t.Fatal("still known to dpkg after --purge")
	}
	for p := range files {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after purge: %v", p, err)
		}
	}
	if _, err := os.Stat("/etc/warren"); !os.IsNotExist(err) {
		t.Errorf("/etc/warren left after purge: %v", err)
	}
}

// serverAsUnit runs the installed server as warren-server.service does
// (user warren, no capabilities, no new privileges, Type=notify): it
// creates its data, sends READY=1 and answers /healthz and /readyz.
func serverAsUnit(t *testing.T) {
	t.Helper()
	uid, gid := lookupID(t, "passwd"), lookupID(t, "group")
	dir, err := os.MkdirTemp("", "warren-deploy-server-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	notify := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := os.Chown(notify, uid, gid); err != nil {
		t.Fatal(err)
	}
	// Its settings from a YAML file, readable by the warren group as
	// /etc/warren/server.yaml would be.
	cfg := filepath.Join(dir, "server.yaml")
	writeCfg := func(level string) {
		body := "listen: \"127.0.0.1:0\"\ndata_dir: " + filepath.Join(dir, "data") + "\nlog_level: " + level + "\n"
		if err := os.WriteFile(cfg, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(cfg, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("info")
	cmd := exec.Command("setpriv", "--reuid=warren", "--regid=warren", "--init-groups", "--nnp", "--bounding-set=-all", "--inh-caps=-all",
		"--", "/usr/bin/warren", "server", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	sc := bufio.NewScanner(stderr)
	var url string
	for sc.Scan() {
		// The server logs "level=INFO msg=listening component=server url=URL ..."
		if line := sc.Text(); strings.Contains(line, " msg=listening ") {
			_, rest, _ := strings.Cut(line, " url=")
			url, _, _ = strings.Cut(rest, " ")
			break
		}
		t.Logf("server: %s", sc.Text())
	}
	if url == "" {
		t.Fatalf("the server as user warren did not start: %v", sc.Err())
	}
	var rest lockedBuffer
	go io.Copy(&rest, stderr)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b := make([]byte, 64)
	if n, err := c.Read(b); err != nil || string(b[:n]) != "READY=1" {
		t.Fatalf("sd_notify: %q %v", b[:n], err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := hc.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Errorf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "data", "server.key")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Errorf("server key not created by warren: %v", err)
	}
	// systemctl reload (ExecReload=/bin/kill -HUP $MAINPID): the file is
	// read again, the process keeps serving.
	writeCfg("debug")
	if out, err := exec.Command("/bin/kill", "-HUP", strconv.Itoa(cmd.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("kill -HUP: %v %s", err, out)
	}
	wait.Until(t, "the reload logged", func() bool {
		return strings.Contains(rest.String(), `msg="config: reloaded" component=server file=`+cfg+" applied=[log_level]")
	})
	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	resp.Body.Close()
}

// lockedBuffer is a bytes.Buffer written by one goroutine, read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lookupID returns the warren user's uid ("passwd") or group's gid ("group").
func lookupID(t *testing.T, db string) int {
	t.Helper()
	f := strings.Split(strings.TrimSpace(run(t, "getent", db, "warren")), ":")
	if len(f) < 3 {
		t.Fatalf("getent %s warren: %q", db, f)
	}
	id, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return id
}
