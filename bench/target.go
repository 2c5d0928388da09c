package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A target is one server under test: a running one given by -url (and
// maybe -pid), or a command chatbench starts on a free loopback port for
// each run and stops after it.
type target struct {
	Label   string `json:"label"`
	Name    string `json:"name"`
	Command string `json:"command,omitempty"`
	URL     string `json:"url,omitempty"`
	// Protocol is how it is loaded: raw or pusher.
	Protocol string `json:"protocol"`

	addr string // host:port to dial
	pid  int    // process to sample; 0 if unknown

	cmd    *exec.Cmd
	output *tailBuffer
	exited chan struct{}
}

// checkLoopbackURL parses a -url value and refuses anything that is not
// ws:// on this machine.
func checkLoopbackURL(raw string) (addr string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("chatbench: bad -url %q: %v", raw, err)
	}
	if u.Scheme != "ws" {
		return "", fmt.Errorf("chatbench: -url %q: only ws:// is supported (chatbench loads servers on this machine; no TLS)", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("chatbench: -url %q: give the server's root (ws://HOST:PORT); chatbench adds /chat/{room} itself", raw)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("chatbench: -url %q: cannot resolve %q: %v", raw, host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("chatbench: refusing non-loopback target %q (%s): chatbench only loads servers on this machine (127.0.0.0/8 or ::1)", raw, ip)
		}
	}
	// Servers usually listen on 127.0.0.1: prefer an IPv4 address.
	ip := ips[0]
	for _, x := range ips {
		if x.To4() != nil {
			ip = x
			break
		}
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// nameOf guesses a short name for a server command: the base name of its
// program or package, skipping go, run, sh and flags.
func nameOf(command string) string {
	for _, f := range strings.Fields(command) {
		if strings.HasPrefix(f, "-") || strings.Contains(f, "=") {
			continue
		}
		switch f {
		case "go", "run", "sh", "exec", "env", "nice", "taskset":
			continue
		}
		return filepath.Base(strings.TrimSuffix(f, "/"))
	}
	return "server"
}

// freeLoopbackPort asks the kernel for an unused port on 127.0.0.1.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start makes the target ready for one run: starts the command, or checks
// that the -url server answers.
func (t *target) start(ctx context.Context, timeout time.Duration) error {
	if t.Command == "" {
		conn, err := net.DialTimeout("tcp", t.addr, 3*time.Second)
		if err != nil {
			return fmt.Errorf("chatbench: cannot reach %s (%v): is the server running there? Start it, or let chatbench start it with -server 'CMD {addr}'", t.URL, err)
		}
		conn.Close()
		return nil
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	t.addr = "127.0.0.1:" + strconv.Itoa(port)
	t.URL = "ws://" + t.addr
	line := strings.ReplaceAll(t.Command, "{addr}", t.addr)
	t.output = &tailBuffer{max: 8 << 10}
	t.cmd = exec.Command("sh", "-c", line)
	t.cmd.Stdout = t.output
	t.cmd.Stderr = t.output
	// Its own process group, so that stopping it also stops what
	// `sh -c` or `go run` started below it.
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := t.cmd.Start(); err != nil {
		return fmt.Errorf("chatbench: starting %q: %w", line, err)
	}
	t.exited = make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(t.exited) }()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-t.exited:
			return fmt.Errorf("chatbench: server %q exited before listening on %s; its output:\n%s", line, t.addr, t.output.String())
		case <-ctx.Done():
			t.stop()
			return ctx.Err()
		default:
		}
		conn, err := net.DialTimeout("tcp", t.addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.stop()
			return fmt.Errorf("chatbench: server %q did not listen on %s within %v (-server-timeout); its output:\n%s", line, t.addr, timeout, t.output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Sample the process that holds the listener: with `go run` or a
	// shell wrapper that is a descendant, not the process we started.
	t.pid = 0
	for i := 0; i < 20 && t.pid == 0; i++ {
		if pid, err := FindListener(port, t.cmd.Process.Pid); err == nil {
			t.pid = pid
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if t.pid == 0 {
		t.pid = t.cmd.Process.Pid
	}
	return nil
}

// stop ends a started server: SIGTERM to its process group, SIGKILL after
// five seconds.
func (t *target) stop() {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	pgid := t.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-t.exited
	}
	// Whatever the group left behind (a `go run` child) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	t.cmd = nil
}

// sample reads the server process, if known.
func (t *target) sample() (ProcSample, bool) {
	if t.pid == 0 {
		return ProcSample{}, false
	}
	s, err := ReadProc(t.pid)
	return s, err == nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}
