package server

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/chromedp/chromedp"
)

// browserChromiumPath finds the Chromium binary. A missing browser fails the test:
// CI installs it, and a developer gets told how.
func browserChromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found in PATH (chromium, chromium-browser): CI must install it (apt-get install -y chromium)")
	}
	t.Fatal("chromium not found in PATH (chromium, chromium-browser): install it with `apt-get install -y chromium`")
	return ""
}

// browserStart launches headless Chromium for the test and returns the
// context of its first tab, which ends after timeout. Open more tabs with
// chromedp.NewContext(ctx); cancelling such a tab's context closes the tab.
// The browser is closed, gracefully if it can be, when the test ends, and
// its output is logged if the test failed.
func browserStart(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	path := browserChromiumPath(t)
	// Cleanups run last in, first out: the browser is gone before its
	// directories are removed.
	userDataDir := t.TempDir()
	tmpDir := t.TempDir() // Chromium's own temporary files, e.g. its singleton socket

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	out := new(testutil.LockedBuffer) // the browser's output, for failure messages
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(userDataDir),
		chromedp.Env("TMPDIR="+tmpDir),
		chromedp.CombinedOutput(out),
	)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		// Close the browser gracefully, so that it cleans up after
		// itself; the cancels kill it if this fails.
		if err := chromedp.Cancel(bctx); err != nil {
			t.Logf("closing the browser: %v", err)
		}
		bcancel()
		acancel()
		cancel()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// Start the browser and its first tab now, so that a launch failure
	// reads as one.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium (%s): %v", path, err)
	}
	return bctx
}

// browserLogLines returns the text of each line of the page's #log.
func browserLogLines(ctx context.Context) ([]string, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('#log > div')).map(d => d.textContent)`))
}

// browserWaitLogLine polls the page until a line of #log equals want.
func browserWaitLogLine(t *testing.T, ctx context.Context, page, want string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](
		`(want) => Array.from(document.querySelectorAll('#log > div')).some(d => d.textContent === want)`,
		chromedp.WithPollingArgs(want),
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		lines, lerr := browserLogLines(ctx)
		t.Fatalf("%s: #log never showed %q: %v (log now: %q, %v)", page, want, err, lines, lerr)
	}
}

// browserWaitStatus polls the page until #status reads want.
func browserWaitStatus(t *testing.T, ctx context.Context, page, want string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("status"))); err != nil {
		t.Fatalf("%s: #status not visible: %v", page, err)
	}
	_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](
		`(want) => document.getElementById('status').textContent === want`,
		chromedp.WithPollingArgs(want),
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		got, terr := chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
		t.Fatalf("%s: #status never read %q: %v (now %q, %v)", page, want, err, got, terr)
	}
}

// browserSend types msg into the page's #message and clicks the Send button.
func browserSend(t *testing.T, ctx context.Context, page, msg string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("message")),
		chromedp.Click(chromedp.ID("message")),
		chromedp.SendKeys(chromedp.ID("message"), msg),
		chromedp.Click(chromedp.CSS("#form button")),
	)
	if err != nil {
		t.Fatalf("%s: sending %q: %v", page, msg, err)
	}
}

// browserCountContaining counts the lines that contain s.
func browserCountContaining(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// TestBrowserChat drives the served chat page in two headless Chromium tabs:
// a message typed in one shows in the other, and the sender sees only its
// own "me: ..." line, never an echo.
func TestBrowserChat(t *testing.T) {
	ctx1 := browserStart(t, 60*time.Second)
	s := newTestServer(t, Config{})
	pageURL := "http://" + s.Addr().String() + "/raw"

	// Page 1 is the browser's first tab; page 2 is a second tab in it.
	if err := chromedp.Do(ctx1, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("page 1: navigate to %s: %v", pageURL, err)
	}
	ctx2, cancel2 := chromedp.NewContext(ctx1)
	defer cancel2()
	if err := chromedp.Do(ctx2, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("page 2: navigate to %s: %v", pageURL, err)
	}

	browserWaitStatus(t, ctx1, "page 1", "Connection established!")
	browserWaitStatus(t, ctx2, "page 2", "Connection established!")
	waitConns(t, s, 2)

	msg := fmt.Sprintf("hello from page one %d", time.Now().UnixNano())
	browserSend(t, ctx1, "page 1", msg)

	browserWaitLogLine(t, ctx2, "page 2", msg)
	browserWaitLogLine(t, ctx1, "page 1", "me: "+msg)

	// A reply from page 2 is a barrier: an echo of msg to page 1 would have
	// been queued on page 1's socket before the reply was even sent.
	reply := "reply from page two"
	browserSend(t, ctx2, "page 2", reply)
	browserWaitLogLine(t, ctx1, "page 1", reply)
	browserWaitLogLine(t, ctx2, "page 2", "me: "+reply)

	lines1, err := browserLogLines(ctx1)
	if err != nil {
		t.Fatalf("page 1: reading #log: %v", err)
	}
	if n := browserCountContaining(lines1, msg); n != 1 {
		t.Errorf("page 1: %d log lines contain %q, want exactly 1 (\"me: ...\"): %q", n, msg, lines1)
	}
	if want := []string{"me: " + msg, reply}; !slices.Equal(lines1, want) {
		t.Errorf("page 1 log = %q, want %q", lines1, want)
	}
	lines2, err := browserLogLines(ctx2)
	if err != nil {
		t.Fatalf("page 2: reading #log: %v", err)
	}
	if want := []string{msg, "me: " + reply}; !slices.Equal(lines2, want) {
		t.Errorf("page 2 log = %q, want %q", lines2, want)
	}
	if got, err := chromedp.Run(ctx1, chromedp.Value(chromedp.ID("message"))); err != nil || got != "" {
		t.Errorf("page 1: #message = %q, %v after sending; want it cleared", got, err)
	}

	// A late joiner: the page dials /chat?history=20, so it is shown what
	// was said before it came, then the live messages, each once.
	ctx3, cancel3 := chromedp.NewContext(ctx1)
	defer cancel3()
	if err := chromedp.Do(ctx3, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("page 3: navigate to %s: %v", pageURL, err)
	}
	browserWaitStatus(t, ctx3, "page 3", "Connection established!")
	waitConns(t, s, 3)
	live := "live after page three came"
	browserSend(t, ctx2, "page 2", live)
	browserWaitLogLine(t, ctx3, "page 3", live)
	lines3, err := browserLogLines(ctx3)
	if err != nil {
		t.Fatalf("page 3: reading #log: %v", err)
	}
	if want := []string{msg, reply, live}; !slices.Equal(lines3, want) {
		t.Errorf("page 3 (late joiner) log = %q, want %q", lines3, want)
	}
}
