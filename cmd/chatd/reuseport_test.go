package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

// socketCount counts the sockets process pid holds open: its listener and
// one per connection (Linux /proc). The kernel decides which of several
// -reuse-port processes takes a connection, so this is how a test asks a
// process itself; a /metrics request would be answered by whichever
// process the kernel picked for it.
func socketCount(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		// An fd may close between ReadDir and Readlink: it is not counted.
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n, nil
}

// connsOf returns how many connections each process holds beyond the
// baseline taken after it started (its listener).
func connsOf(t *testing.T, procs []*chatdProc, base []int) []int {
	t.Helper()
	got := make([]int, len(procs))
	for i, p := range procs {
		n, err := socketCount(p.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("counting the sockets of chatd pid %d: %v", p.cmd.Process.Pid, err)
		}
		got[i] = n - base[i]
	}
	return got
}

// wsClient is a WebSocket client whose reader runs on its own goroutine,
// so that a test holding hundreds of them can see which were closed and
// ping the others.
type wsClient struct {
	c     *websocket.Conn
	pongs chan struct{}
	done  chan struct{} // closed when the read loop ends
	code  int           // the close frame's code, or -1; set before done closes
	err   error         // why the read loop ended; set before done closes
}

func dialClient(url string) (*wsClient, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	cl := &wsClient{c: c, pongs: make(chan struct{}, 1), done: make(chan struct{}), code: -1}
	c.SetPongHandler(func(string) error {
		select {
		case cl.pongs <- struct{}{}:
		default:
		}
		return nil
	})
	go func() {
		defer close(cl.done)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					cl.code = ce.Code
				}
				cl.err = err
				return
			}
		}
	}()
	return cl, nil
}

func (cl *wsClient) closed() bool {
	select {
	case <-cl.done:
		return true
	default:
		return false
	}
}

// ping sends a ping and waits for the pong: the connection is served.
func (cl *wsClient) ping(within time.Duration) error {
	if err := cl.c.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(within)); err != nil {
		return err
	}
	select {
	case <-cl.pongs:
		return nil
	case <-cl.done:
		return fmt.Errorf("closed instead of a pong: %v", cl.err)
	case <-time.After(within):
		return fmt.Errorf("no pong within %v", within)
	}
}

// dialAttempt is one new connection tried while processes come and go.
type dialAttempt struct {
	at  time.Time
	err error
}

// dialLoop opens WebSocket connections to url from workers goroutines,
// one after another each, closing each once upgraded, until stop closes;
// then it returns every attempt.
func dialLoop(url string, workers int, stop <-chan struct{}) <-chan []dialAttempt {
	out := make(chan []dialAttempt, 1)
	var mu sync.Mutex
	var all []dialAttempt
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				c, resp, err := d.Dial(url, nil)
				if err == nil {
					resp.Body.Close()
					c.Close()
				} else if resp != nil {
					err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
				}
				mu.Lock()
				all = append(all, dialAttempt{at, err})
				mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		out <- all
	}()
	return out
}

// TestChatdReusePort runs several chatd processes on one port as a user
// would: with -reuse-port they share it and the kernel spreads the
// connections; a restart without downtime is "start the new one, SIGTERM
// the old one"; without the flag the second process fails to start.
func TestChatdReusePort(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")

	t.Run("Exclusive", func(t *testing.T) {
		for _, tc := range []struct {
			name          string
			first, second []string
		}{
			{"neither", nil, nil},
			{"only the first", []string{"-reuse-port"}, nil},
			{"only the second", nil, []string{"-reuse-port"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				first := startChatd(t, bin, append([]string{"-addr", "127.0.0.1:0"}, tc.first...)...)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, append([]string{"-addr", first.addr, "-admin-addr", ""}, tc.second...)...)
				cmd.Env = withoutChatdEnv(os.Environ())
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Fatalf("second chatd on %s: %v, want exit status 1 (the listen error)\n%s", first.addr, err, stderr.String())
				}
				// Listening failed before anything was logged: stderr is
				// the one error line.
				out := strings.TrimSpace(stderr.String())
				if strings.Contains(out, "\n") {
					t.Errorf("stderr is more than one line: %q", out)
				}
				for _, want := range []string{"chatd: ", first.addr, "address already in use", "-reuse-port"} {
					if !strings.Contains(out, want) {
						t.Errorf("stderr does not say %q: %q", want, out)
					}
				}
				t.Logf("second chatd: %s", out)
				// The first one serves on, unharmed.
				cl, err := dialClient("ws://" + first.addr + "/chat")
				if err != nil {
					t.Fatalf("first chatd after the second failed: %v", err)
				}
				defer cl.c.Close()
				if err := cl.ping(5 * time.Second); err != nil {
					t.Fatalf("first chatd after the second failed: %v", err)
				}
			})
		}
	})

	t.Run("SharedAndRestart", func(t *testing.T) {
		const drain = 3 * time.Second
		args := func(addr string) []string {
			return []string{"-reuse-port", "-addr", addr, "-drain-timeout", drain.String()}
		}
		a := startChatd(t, bin, args("127.0.0.1:0")...)
		addr := a.addr
		b := startChatd(t, bin, args(addr)...)
		if b.addr != addr {
			t.Fatalf("B listens on %s, want A's %s", b.addr, addr)
		}
		procs := []*chatdProc{a, b}
		base := connsOf(t, procs, []int{0, 0})
		url := "ws://" + addr + "/chat"

		// 200 clients, spread by the kernel over A and B.
		const n = 200
		clients := make([]*wsClient, n)
		for i := range clients {
			cl, err := dialClient(url)
			if err != nil {
				t.Fatalf("client %d: dial %s: %v", i, url, err)
			}
			clients[i] = cl
			t.Cleanup(func() { cl.c.Close() })
		}
		var split []int
		testutil.CheckFor(t, 5*time.Second, func() error {
			split = connsOf(t, procs, base)
			if split[0]+split[1] != n || split[0] == 0 || split[1] == 0 {
				return fmt.Errorf("A holds %d connections, B %d; want %d in all and some on each", split[0], split[1], n)
			}
			return nil
		})
		onA := split[0]
		t.Logf("%d clients: %d on A, %d on B", n, split[0], split[1])

		// The restart: C joins the port, then A is told to stop while new
		// connections keep coming.
		c := startChatd(t, bin, args(addr)...)
		procs = append(procs, c)
		base = append(base, connsOf(t, []*chatdProc{c}, []int{0})[0])

		stop := make(chan struct{})
		attempts := dialLoop(url, 4, stop)
		time.Sleep(200 * time.Millisecond) // dial before the switch, too
		term := time.Now()
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM to A: %v", err)
		}
		status := a.exitStatus(t, drain+2*time.Second)
		exited := time.Now()
		time.Sleep(300 * time.Millisecond) // and after it
		close(stop)
		all := <-attempts
		if status != 0 {
			t.Errorf("A exited with status %d after SIGTERM, want 0", status)
		}
		t.Logf("A exited %v after SIGTERM (drain timeout %v)", exited.Sub(term).Round(time.Millisecond), drain)

		// A's clients, and only they, got 1001 going away.
		var gone []int
		for i, cl := range clients {
			if !cl.closed() {
				continue
			}
			if cl.code != websocket.CloseGoingAway {
				t.Errorf("client %d: ended with %v, want close %d (going away)", i, cl.err, websocket.CloseGoingAway)
			}
			gone = append(gone, i)
		}
		if len(gone) != onA {
			t.Errorf("%d clients were closed, want A's %d", len(gone), onA)
		}
		// A's own count, which also holds the new connections it had
		// at that instant.
		if m := regexp.MustCompile(`msg="shutting down" connections=(\d+)`).FindStringSubmatch(a.stderr.String()); m == nil {
			t.Errorf("A logged no \"shutting down connections=N\" line")
		} else if got, _ := strconv.Atoi(m[1]); got < onA {
			t.Errorf("A shut down with %d connections, want at least its %d clients", got, onA)
		}

		// New connections: the port is never closed (no connection is
		// refused), and once A is gone every one is served by B or C.
		// Around the moment A closes its listener a few may fail: the
		// kernel resets the connections still queued on A's listener
		// (unless net.ipv4.tcp_migrate_req=1 moves them to B or C), and
		// A's Shutdown closes the handshakes it has under way or answers
		// them 503. Anything more means A held connections it would not
		// serve.
		const maxFailed = 10
		var before, during, after, failed int
		for _, at := range all {
			switch {
			case at.at.Before(term):
				before++
			case at.at.Before(exited):
				during++
			default:
				after++
			}
			if at.err == nil {
				continue
			}
			failed++
			off := at.at.Sub(term).Round(time.Microsecond)
			switch {
			case errors.Is(at.err, syscall.ECONNREFUSED):
				t.Errorf("new connection %v after SIGTERM refused: %v", off, at.err)
			case !at.at.Before(exited):
				t.Errorf("new connection %v after SIGTERM, after A exited, failed: %v", off, at.err)
			default:
				t.Logf("new connection %v after SIGTERM failed: %v", off, at.err)
			}
		}
		t.Logf("new connections: %d before SIGTERM, %d between SIGTERM and A's exit, %d after; %d failed", before, during, after, failed)
		if failed > maxFailed {
			t.Errorf("%d new connections failed during the switch, want at most %d", failed, maxFailed)
		}
		if during == 0 {
			t.Errorf("no new connection was tried while A shut down")
		}

		// A's clients reconnect and land on B or C; everybody carries on.
		for _, i := range gone {
			again, err := dialClient(url)
			if err != nil {
				t.Fatalf("client %d, reconnecting: %v", i, err)
			}
			t.Cleanup(func() { again.c.Close() })
			clients[i] = again
		}
		testutil.CheckFor(t, 5*time.Second, func() error {
			split = connsOf(t, procs[1:], base[1:])
			if split[0]+split[1] != n || split[1] == 0 {
				return fmt.Errorf("B holds %d connections, C %d; want %d in all and some on C", split[0], split[1], n)
			}
			return nil
		})
		t.Logf("after the restart: %d on B, %d on C", split[0], split[1])
		for i, cl := range clients {
			if err := cl.ping(5 * time.Second); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}
	})
}
