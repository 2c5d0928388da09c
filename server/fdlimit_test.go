package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// setRlimit sets a limit field: uint64 on Linux and macOS, int64 on
// FreeBSD.
func setRlimit[T ~int64 | ~uint64](p *T, v int) { *p = T(v) }

// TestHelperLimitedServer is not a test: it is the server process that the
// open-file-limit tests start with a lowered RLIMIT_NOFILE. It passes at
// once when run normally.
func TestHelperLimitedServer(t *testing.T) {
	spec := os.Getenv("CHATD_TEST_LIMITED")
	if spec == "" {
		return
	}
	var nofile, maxConns int
	fmt.Sscanf(spec, "%d:%d", &nofile, &maxConns)
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	setRlimit(&rl.Cur, nofile)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	s, err := New(Config{Addr: "127.0.0.1:0", MaxConns: maxConns,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	if err := s.Start(); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", s.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	s.Shutdown(context.Background())
	os.Exit(0)
}

type limitedServer struct {
	cmd    *exec.Cmd
	addr   string
	stderr *testutil.LockedBuffer
}

func startLimitedServer(t *testing.T, nofile, maxConns int) *limitedServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLimitedServer$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("CHATD_TEST_LIMITED=%d:%d", nofile, maxConns))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	ls := &limitedServer{cmd: cmd, stderr: &testutil.LockedBuffer{}}
	cmd.Stderr = ls.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopChild(cmd, stdin) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		t.Fatalf("child server: %q %v; stderr: %s", line, err, ls.stderr.String())
	}
	ls.addr = strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	return ls
}

// cpuTime returns the process's user+system CPU time.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// handshakeAll dials n connections and returns the status line each got
// within wait ("" if none).
func handshakeAll(t *testing.T, addr string, n int, wait time.Duration) ([]net.Conn, []string) {
	conns := make([]net.Conn, n)
	status := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			uc, err := testutil.Upgrade(c, addr, "/chat", wait)
			if err == nil {
				status[i] = "101"
				conns[i] = uc
				return
			}
			var refused *testutil.UpgradeError
			if errors.As(err, &refused) {
				status[i] = strconv.Itoa(refused.StatusCode)
			}
		}(i, c)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns, status
}

func count(status []string, want string) int {
	n := 0
	for _, s := range status {
		if s == want {
			n++
		}
	}
	return n
}

// TestOpenFileLimitDoesNotSpinOrDie: at the open-file limit accept fails with
// EMFILE. The server backs off instead of spinning, logs at a bounded rate,
// keeps serving existing connections and accepts again once fds free up.
func TestOpenFileLimitDoesNotSpinOrDie(t *testing.T) {
	ls := startLimitedServer(t, 128, 100000)
	conns, status := handshakeAll(t, ls.addr, 200, 2*time.Second)
	up := count(status, "101")
	if up < 50 || up >= 200 {
		t.Fatalf("%d of 200 upgraded under a 128-fd limit; want some but not all", up)
	}
	// At the limit: the server must idle, not spin on the listener.
	pid := ls.cmd.Process.Pid
	before := cpuTime(t, pid)
	time.Sleep(time.Second)
	if used := cpuTime(t, pid) - before; used > 200*time.Millisecond {
		t.Fatalf("server used %v CPU in 1s while at the fd limit (spinning)", used)
	}
	// Existing connections are still served.
	var a, b *testutil.UpgradedConn
	for i, s := range status {
		if s != "101" {
			continue
		}
		if a == nil {
			a = conns[i].(*testutil.UpgradedConn)
		} else if b == nil {
			b = conns[i].(*testutil.UpgradedConn)
		}
	}
	// Everyone in the lobby gets a's message; b is one of them.
	a.Write(testutil.Frame(true, 0, opText, true, []byte("alive")))
	b.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, op, p, err := readFrame(b); err != nil || op != opText || string(p) != "alive" {
		t.Fatalf("existing connection not served at the fd limit: %v %q %v", op, p, err)
	}
	// Free fds: close 60 upgraded connections; the waiting ones get in.
	closed := 0
	for i, s := range status {
		if s == "101" && conns[i] != a && conns[i] != b && closed < 60 {
			conns[i].Close()
			closed++
		}
	}
	waiting := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, s := range status {
		if s != "" {
			continue
		}
		waiting++
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && strings.Contains(line, " 101 ") {
				mu.Lock()
				up++
				mu.Unlock()
			}
		}(conns[i])
	}
	wg.Wait()
	if up < 50+closed/2 {
		t.Fatalf("after freeing %d fds only %d upgraded in total (%d were waiting)", closed, up, waiting)
	}
	if ls.cmd.ProcessState != nil {
		t.Fatal("server exited")
	}
	logs := ls.stderr.String()
	if n := strings.Count(logs, "accept failed"); n < 1 || n > 10 {
		t.Fatalf("accept-failure warnings logged %d times in ~4s; want a few (rate-limited)\n%s", n, logs)
	}
}

// TestDefaultMaxConnsFollowsFileLimit: with no -max-conns the cap is the
// open-file limit minus a reserve, and handshakes over it get HTTP 503.
func TestDefaultMaxConnsFollowsFileLimit(t *testing.T) {
	ls := startLimitedServer(t, 300, 0)
	_, status := handshakeAll(t, ls.addr, 210, 3*time.Second)
	if up, busy := count(status, "101"), count(status, "503"); up != 300-fdReserve || busy != 210-up {
		t.Fatalf("with a 300-fd limit: %d upgraded, %d got 503; want %d and %d", up, busy, 300-fdReserve, 210-(300-fdReserve))
	}
}
