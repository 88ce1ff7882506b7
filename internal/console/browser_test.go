package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/warrenmesh/warren/internal/console"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// chromium finds the browser: $WARREN_CHROMIUM, or chromium on the PATH
// (Debian's package, installed by scripts/install-deps.sh). Without one the
// test skips, unless WARREN_REQUIRE_NETNS is set (CI), where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WARREN_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("WARREN_REQUIRE_NETNS") != "" {
		t.Fatal("chromium is missing (scripts/install-deps.sh installs it) and WARREN_REQUIRE_NETNS is set")
	}
	t.Skip("chromium is missing (scripts/install-deps.sh installs it)")
	return ""
}

// shots is where screenshots go: $WARREN_ARTIFACTS/console, or a
// directory that outlives the test, logged.
func shots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WARREN_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "warren-artifacts-"); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join(dir, "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// tab is one browser tab on the console.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *tab) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return s
}

// waitJS waits until expr is true in the page.
func (b *tab) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// open navigates to a console path and waits for sel.
func (b *tab) open(path, sel string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// click clicks sel and waits for the page it leads to to show want.
func (b *tab) click(sel, want string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
	b.do("after clicking "+sel, chromedp.WaitVisible(chromedp.CSS(want)))
}

func (b *tab) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// The console in a real browser (headless Chromium, as root with
// --no-sandbox): sign in with an API key, the nodes page following a node
// offline and online live, approve a route and an exit node, create an
// auth key (shown once, and it works), the policy editor showing a
// deliberate error at its line, delete a node, and a cross-origin form
// that is refused. Each page is saved as a screenshot.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	e := newEnv(t, console.Options{})
	router := e.join("router", "10.1.0.0/24", "0.0.0.0/0", "::/0")
	laptop := e.join("laptop")
	ctx := context.Background()
	wait.For(t, 10*time.Second, "both nodes online", func() bool {
		on := 0
		for _, n := range e.srv.Nodes() {
			if n.Online {
				on++
			}
		}
		return on == 2
	})
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("headless", "new"), chromedp.WindowSize(1100, 720), chromedp.Flag("disable-gpu", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelTab()
	b := &tab{t: t, ctx: bctx, base: e.hs.URL, dir: shots(t)}
	// The browser lives as long as the context of the first action: no
	// timeout on this one.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}

	// Sign in.
	b.open("/admin/", "#signin")
	b.shot("signin")
	b.do("type the key", chromedp.SendKeys(chromedp.CSS("#key"), e.apiKey))
	b.click("#signin-apikey", "#nodes")
	row := `tr[data-node="` + itoa(laptop.id) + `"] `
	if got := b.text(row + `.online`); got != "online" {
		t.Fatalf("laptop shown %q", got)
	}
	if os, v := b.text(row+".os"), b.text(row+".version"); os != "linux" || v != "1.2.3-test" {
		t.Fatalf("laptop's OS %q, version %q", os, v)
	}
	b.shot("nodes")

	// Live: the laptop goes offline and back online; the page follows
	// without reloading (the marker survives) and without polling.
	b.waitJS("the event stream", `document.body.dataset.liveEvents >= 1`, 10*time.Second)
	b.eval(`document.body.dataset.marker = "same page"; "ok"`)
	cell := `document.querySelector('tr[data-node="` + itoa(laptop.id) + `"] .online').textContent`
	start := time.Now()
	laptop.stop()
	b.waitJS("laptop offline on the page", cell+` === "offline"`, 5*time.Second)
	t.Logf("offline shown %v after the node's stream ended", time.Since(start).Round(time.Millisecond))
	b.shot("nodes-offline")
	start = time.Now()
	laptop.start()
	b.waitJS("laptop online on the page", cell+` === "online"`, 5*time.Second)
	t.Logf("online shown %v after the node's stream started", time.Since(start).Round(time.Millisecond))
	if m := b.eval(`document.body.dataset.marker || "reloaded"`); m != "same page" {
		t.Fatalf("the page reloaded (%s) instead of updating", m)
	}

	// Approve a subnet route and the exit node.
	b.open("/admin/nodes/"+itoa(router.id), "#routes")
	b.shot("node")
	b.click(`tr[data-route="10.1.0.0/24"] button.approve`, "#flash")
	b.click(`tr[data-route="exit"] button.approve`, "#flash")
	n, err := e.st.GetNode(ctx, router.id)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("::/0")}
	if got := n.EnabledRoutes(); !slices.Equal(got, want) {
		t.Fatalf("enabled routes %v, want %v", got, want)
	}
	if s := b.text(`tr[data-route="10.1.0.0/24"]`); !strings.Contains(s, "approved") || strings.Contains(s, "awaiting") {
		t.Fatalf("route row after approval: %q", s)
	}
	b.eval(`document.getElementById("routes").scrollIntoView(); "ok"`)
	b.shot("node-approved")

	// Create an auth key: shown once, and a node joins with it.
	b.open("/admin/keys", "#newkeyform")
	b.do("options", chromedp.Click(chromedp.CSS(`input[name="reusable"]`)), chromedp.SendKeys(chromedp.CSS(`input[name="expiration"]`), "1h"))
	b.click("#create", "#secret")
	secret := b.text("#secret")
	if !strings.HasPrefix(secret, "wkey_") {
		t.Fatalf("secret %q", secret)
	}
	if loc := b.eval(`location.href`); strings.Contains(loc, secret) {
		t.Fatal("the secret is in the URL")
	}
	b.shot("keys-created")
	e.authKey = secret
	joined := e.join("joined-with-console-key")
	if k, err := e.st.GetNode(ctx, joined.id); err != nil || k.Ephemeral {
		t.Fatalf("joined node: %+v %v", k, err)
	}
	b.open("/admin/keys", "#keys")
	if strings.Contains(b.text("body"), secret) {
		t.Fatal("the secret is shown again")
	}

	// The policy editor: a deliberate error on line 4 is shown at line
	// 4, the cursor is put there, and nothing is saved; a failing test
	// stops a save too; a good policy is saved.
	b.open("/admin/policy", "#policy")
	bad := "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},\n    {\"action\": \"accept\", \"src\": [\"alice@\"], \"dts\": [\"*:22\"]},\n  ],\n}\n"
	b.do("type the policy", chromedp.SetValue(chromedp.CSS("#policy"), bad))
	b.click("#save", "#problems")
	problems := b.text("#problems")
	if !strings.Contains(problems, "line 4, column") || !strings.Contains(problems, "dts") {
		t.Fatalf("problems: %q", problems)
	}
	if got := b.eval(`document.querySelector("#excerpt .mark").dataset.line`); got != "4" {
		t.Fatalf("excerpt marks line %s", got)
	}
	if got := b.eval(`(() => { const ta = document.getElementById("policy"); return String(ta.value.slice(0, ta.selectionStart).split("\n").length) })()`); got != "4" {
		t.Fatalf("cursor on line %s", got)
	}
	if got := b.eval(`document.getElementById("policy").value`); got != bad {
		t.Fatalf("the editor lost the text: %q", got)
	}
	b.shot("policy-error")
	if p, err := e.st.Policy(ctx); err != nil || p.ID != 0 {
		t.Fatalf("a refused policy was stored: %+v %v", p, err)
	}
	failing := "{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"*:443\"]}],\n  \"tests\": [{\"src\": \"alice@\", \"accept\": [\"10.1.0.5:22\"]}],\n}\n"
	b.do("type a policy whose test fails", chromedp.SetValue(chromedp.CSS("#policy"), failing))
	b.click("#save", "#problems")
	if s := b.text("#problems"); !strings.Contains(s, "10.1.0.5:22") {
		t.Fatalf("failing test not shown: %q", s)
	}
	good := strings.Replace(failing, "10.1.0.5:22", "10.1.0.5:443", 1)
	b.do("type a good policy", chromedp.SetValue(chromedp.CSS("#policy"), good))
	b.click("#save", "#flash")
	if p, err := e.st.Policy(ctx); err != nil || p.Text != good {
		t.Fatalf("policy not saved: %+v %v", p, err)
	}
	b.shot("policy")

	// The other pages.
	b.open("/admin/dns", "#records")
	b.do("add a record", chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "db.warren.internal"),
		chromedp.SendKeys(chromedp.CSS(`input[name="value"]`), "100.64.0.9"))
	b.click(`form[action="/admin/dns/records"] button`, "#flash")
	if s := b.text("#records"); !strings.Contains(s, "db.warren.internal") {
		t.Fatalf("record not listed: %q", s)
	}
	b.shot("dns")
	b.open("/admin/users", "#users")
	b.shot("users")

	// Delete a node.
	b.open("/admin/nodes/"+itoa(laptop.id), "#node")
	b.do("open the delete box", chromedp.Click(chromedp.CSS("details summary")))
	b.click("#delete", "#flash")
	if _, err := e.st.GetNode(ctx, laptop.id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("laptop not deleted: %v", err)
	}
	b.waitJS("the laptop gone from the list", `!document.querySelector('tr[data-node="`+itoa(laptop.id)+`"]')`, 5*time.Second)
	b.shot("nodes-after-delete")

	// CSRF: a page on another origin (same host, another port: the same
	// site, so the SameSite cookie is sent) posts a form to the console.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form method="post" action="%s/admin/nodes/%d/delete"><input name="csrf" value="guess"></form><script>document.forms[0].submit()</script>`, e.hs.URL, router.id)
	}))
	defer evil.Close()
	b.do("visit the other origin", chromedp.Navigate(evil.URL))
	b.waitJS("the forged post's answer", `location.href.startsWith("`+e.hs.URL+`") && document.body && document.body.innerText.length > 0`, 10*time.Second)
	if s := b.text("body"); !strings.Contains(s, "cross-origin request refused") {
		t.Fatalf("forged post answered %q", s)
	}
	if _, err := e.st.GetNode(ctx, router.id); err != nil {
		t.Fatalf("the forged post deleted the router: %v", err)
	}
}
