package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatd/bench/testutil"
	"chatd/server/buildinfo"
)

// vcsExpected says what go build stamps into a binary built in this
// checkout: the HEAD commit and whether the tree has changes ("true",
// "false"); ok is false where it stamps nothing: GOFLAGS with
// -buildvcs=false, a linked git worktree (golang/go#58218: go looks for a
// .git directory, a worktree has a .git file), or no git.
func vcsExpected(t *testing.T) (rev, dirty string, ok bool) {
	t.Helper()
	goTool, err := testutil.GoTool()
	if err != nil {
		t.Fatal(err)
	}
	flags, err := exec.Command(goTool, "env", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env GOFLAGS: %v", err)
	}
	if strings.Contains(string(flags), "-buildvcs=false") {
		t.Logf("GOFLAGS=%s: the binary carries no VCS fields", strings.TrimSpace(string(flags)))
		return "", "", false
	}
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", args...).Output()
		return strings.TrimSpace(string(out)), err
	}
	dirs, err := git("rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir")
	if err != nil {
		t.Logf("no git checkout (%v): the binary carries no VCS fields", err)
		return "", "", false
	}
	if d := strings.Fields(dirs); len(d) != 2 || d[0] != d[1] {
		t.Logf("a linked git worktree (%s): go build stamps no VCS fields here (golang/go#58218)", dirs)
		return "", "", false
	}
	if rev, err = git("rev-parse", "HEAD"); err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	status, err := git("status", "--porcelain")
	if err != nil {
		t.Fatalf("git status: %v", err)
	}
	return rev, map[bool]string{true: "true", false: "false"}[status != ""], true
}

var versionLine = regexp.MustCompile(`^chatd (\S+) revision=(\S+) time=(\S+) dirty=(\S+) go=(\S+)\n$`)

// TestChatdVersion: chatd -version prints the build on one line of stdout
// and exits 0; the start-up line and /metrics' chatd_build_info say the
// same.
func TestChatdVersion(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	rev, dirty, stamped := vcsExpected(t)

	cmd := exec.Command(bin, "-version")
	cmd.Env = withoutChatdEnv(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chatd -version: %v, want exit status 0\n%s", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("chatd -version wrote to stderr: %q", stderr.String())
	}
	m := versionLine.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("chatd -version printed %q, want one line: chatd VERSION revision=... time=... dirty=... go=...", stdout.String())
	}
	t.Logf("chatd -version: %s", strings.TrimSpace(stdout.String()))
	want := buildinfo.Info{Version: m[1], Revision: m[2], Time: m[3], Dirty: m[4], GoVersion: m[5]}
	if want.GoVersion != runtime.Version() {
		t.Errorf("go=%s, want %s (the toolchain that built it)", want.GoVersion, runtime.Version())
	}
	if stamped {
		if want.Revision != rev || want.Dirty != dirty {
			t.Errorf("revision=%s dirty=%s, want the checkout's: %s %s", want.Revision, want.Dirty, rev, dirty)
		}
		if _, err := time.Parse(time.RFC3339, want.Time); err != nil {
			t.Errorf("time=%s: not RFC 3339: %v", want.Time, err)
		}
		if want.Version == buildinfo.Unknown {
			t.Errorf("no module version")
		}
	} else if want.Revision != buildinfo.Unknown || want.Time != buildinfo.Unknown || want.Dirty != buildinfo.Unknown {
		t.Errorf("built without VCS stamping, yet revision=%s time=%s dirty=%s", want.Revision, want.Time, want.Dirty)
	}

	// The start-up line.
	proc := startChatd(t, bin, "-addr", "127.0.0.1:0")
	logWant := "version=" + want.Version + " revision=" + want.Revision + " revision_time=" + want.Time +
		" dirty=" + want.Dirty + " go=" + want.GoVersion
	if line := listeningLine(proc.stderr.String()); !strings.Contains(line, logWant) {
		t.Errorf("start-up line %q does not carry %q", line, logWant)
	}

	// /metrics.
	resp, err := http.Get("http://" + proc.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	metricWant := `chatd_build_info{dirty="` + want.Dirty + `",goversion="` + want.GoVersion + `",revision="` + want.Revision +
		`",revision_time="` + want.Time + `",version="` + want.Version + `"} 1`
	if !strings.Contains(string(body), "\n"+metricWant+"\n") {
		var got []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "chatd_build_info") {
				got = append(got, l)
			}
		}
		t.Errorf("/metrics has %q, want %q", got, metricWant)
	}
	if !strings.Contains(string(body), "# TYPE chatd_build_info gauge\n") {
		t.Errorf("chatd_build_info is not a gauge")
	}
}

// listeningLine is the "chatd listening" line of a chatd's stderr.
func listeningLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, `msg="chatd listening"`) {
			return l
		}
	}
	return ""
}

// holdDefaultAdmin makes DefaultAdminAddr taken for the test: it listens
// there, or finds it taken already (by whatever program: the same
// situation).
func holdDefaultAdmin(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", DefaultAdminAddr)
	if err != nil {
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("taking %s: %v", DefaultAdminAddr, err)
		}
		t.Logf("%s is taken already: %v", DefaultAdminAddr, err)
		return
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // answer as a stranger would, should anything call
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// TestChatdDefaultAdminAddrTaken: with the default admin address taken
// (Prometheus's or another chatd's port, here a listener of the test's),
// chatd without -admin-addr starts anyway, says so in one warning naming
// -admin-addr, and serves; the same address given explicitly, by flag or
// environment, is still an error (exit status 1).
func TestChatdDefaultAdminAddrTaken(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	holdDefaultAdmin(t)

	t.Run("Default", func(t *testing.T) {
		proc := startChatdEnv(t, bin, nil, "-addr", "127.0.0.1:0")
		if proc.admin != "off" {
			t.Errorf("admin=%s in the start-up line, want off", proc.admin)
		}
		var warnings []string
		for _, l := range strings.Split(proc.stderr.String(), "\n") {
			if strings.Contains(l, "level=WARN") {
				warnings = append(warnings, l)
			}
		}
		if len(warnings) != 1 || !strings.Contains(warnings[0], "-admin-addr") || !strings.Contains(warnings[0], DefaultAdminAddr) {
			t.Fatalf("warnings %q, want one naming -admin-addr and %s", warnings, DefaultAdminAddr)
		}
		// It serves: a WebSocket client is upgraded, /healthz answers.
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+proc.addr+"/chat/admin-taken", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		resp.Body.Close()
		c.Close()
		hr, err := http.Get("http://" + proc.addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		hb, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if hr.StatusCode != http.StatusOK || string(hb) != "ok\n" {
			t.Errorf("/healthz: %d %q, want 200 ok", hr.StatusCode, hb)
		}
		if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if status := proc.exitStatus(t, 10*time.Second); status != 0 {
			t.Errorf("exit status %d after SIGTERM", status)
		}
	})

	explicit := func(t *testing.T, env []string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
		cmd.Env = append(withoutChatdEnv(os.Environ()), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("chatd %q %q kept running with its admin address taken\n%s", env, args, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("chatd %q %q: %v, want exit status 1\n%s", env, args, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "-admin-addr") || !strings.Contains(stderr.String(), DefaultAdminAddr) {
			t.Errorf("stderr does not name -admin-addr and %s: %q", DefaultAdminAddr, stderr.String())
		}
	}
	t.Run("Flag", func(t *testing.T) { explicit(t, nil, "-admin-addr", DefaultAdminAddr) })
	t.Run("Env", func(t *testing.T) { explicit(t, []string{"CHATD_ADMIN_ADDR=" + DefaultAdminAddr}) })
}
