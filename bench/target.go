package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A target is one server under test: running ones given by -url (a
// comma-separated list, and maybe -pid), or a command chatbench starts
// -instances times, each copy on its own free loopback port, for each run
// and stops after it. Connections are spread over the instances
// round-robin (connection id modulo the number of instances); server
// figures are sums over them.
type target struct {
	Label   string `json:"label"`
	Name    string `json:"name"`
	Command string `json:"command,omitempty"`
	// URL is the -url value (one URL or a comma-separated list); once a
	// command is started, the URLs of its instances, comma-separated.
	URL string `json:"url,omitempty"`
	// Protocol is how it is loaded: raw or pusher.
	Protocol string `json:"protocol"`
	// Instances is how many server processes make up the target.
	Instances int `json:"instances"`
	// PIDs (with -url): the process to sample per URL; 0 means whoever
	// listens on its port.
	PIDs []int `json:"-"`
	// MetricsAddr (with URL): where the first server serves /metrics;
	// empty means its own address.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// NATS is the nats-server binary chatbench starts for each run
	// before the instances, when Command has {nats}; its URL replaces
	// {nats}. Its process counts among the server's (CPU, RSS).
	NATS string `json:"nats,omitempty"`
	// NATSJS: that nats-server runs with JetStream (-js), its store in a
	// fresh temporary directory per run (-sd), removed when it stops.
	NATSJS bool `json:"nats_js,omitempty"`
	// SharedPort (-reuse-port): the command's instances all listen on one
	// port (each must set SO_REUSEPORT: chatd -reuse-port) and the kernel
	// spreads the connections over them, so the client dials one address
	// and each instance's share is read from its open fds.
	SharedPort bool `json:"shared_port,omitempty"`

	inst []*instance // this run's instances
	nats *instance   // this run's nats-server, or nil
	hook *instance   // this run's publish hook receiver ({hook}), or nil; not a server process
}

// natsPlaceholder is what chatbench replaces with the URL of the
// nats-server it started (-nats) in a server command.
const natsPlaceholder = "{nats}"

// An instance is one server process of a target.
type instance struct {
	addr    string // host:port to dial
	url     string
	metrics string // host:port of its /metrics: {admin}, -metrics-addr, or addr
	pid     int    // process to sample; 0 if unknown

	cmd    *exec.Cmd
	output *tailBuffer
	exited chan struct{}
	line   string // the command line it was started with (sh -c)
	port   int    // the port it listens on
	dir    string // removed once it stopped (a nats-server's JetStream store)
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
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

// start makes the target ready for one run: starts its nats-server (if
// any) and then the command's instances, one after the other (each
// listens before the next picks its port), or checks that every -url
// server answers.
func (t *target) start(ctx context.Context, timeout time.Duration) error {
	t.inst, t.nats, t.hook = nil, nil, nil
	if t.Command == "" {
		urls := splitList(t.URL)
		for i, u := range urls {
			addr, err := checkLoopbackURL(u)
			if err != nil {
				return err
			}
			conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return fmt.Errorf("chatbench: cannot reach %s (%v): is the server running there? Start it, or let chatbench start it with -server 'CMD {addr}'", u, err)
			}
			conn.Close()
			in := &instance{addr: addr, url: u, metrics: addr}
			if i == 0 && t.MetricsAddr != "" {
				in.metrics = t.MetricsAddr
			}
			if i < len(t.PIDs) {
				in.pid = t.PIDs[i]
			}
			if in.pid == 0 {
				// A server on this machine: find who listens on the port.
				if _, port, err := splitPort(addr); err == nil {
					in.pid, _ = FindListener(port, 0)
				}
			}
			t.inst = append(t.inst, in)
		}
		return nil
	}
	command := t.Command
	if t.NATS != "" {
		ns, err := startNATS(ctx, t.NATS, t.NATSJS, timeout)
		if err != nil {
			return err
		}
		t.nats = ns
		command = strings.ReplaceAll(command, natsPlaceholder, ns.url)
	}
	if hasHook(command) {
		h, err := startHookReceiver(ctx, timeout)
		if err != nil {
			t.stop()
			return err
		}
		t.hook = h
		command = strings.ReplaceAll(command, hookPlaceholder, h.url)
	}
	n := max(1, t.Instances)
	var urls []string
	shared := 0 // the one port of a SharedPort target
	if t.SharedPort {
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		shared = port
	}
	for i := 0; i < n; i++ {
		in, err := startInstance(ctx, command, shared, timeout)
		if err != nil {
			t.stop()
			if n > 1 {
				err = fmt.Errorf("instance %d of %d: %w", i+1, n, err)
			}
			return err
		}
		t.inst = append(t.inst, in)
		if !t.SharedPort || i == 0 {
			urls = append(urls, in.url)
		}
	}
	t.URL = strings.Join(urls, ",")
	return nil
}

// adminPlaceholder is what chatbench replaces with a second free loopback
// address in a server command, where it then scrapes /metrics (chatd's
// -admin-addr).
const adminPlaceholder = "{admin}"

// startInstance starts one copy of command on a free loopback port (or,
// when port is not 0, on that one, shared with the other instances) and
// one more for {admin}, and waits until it listens.
func startInstance(ctx context.Context, command string, port int, timeout time.Duration) (*instance, error) {
	admin := ""
	if strings.Contains(command, adminPlaceholder) {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		admin = "127.0.0.1:" + strconv.Itoa(port)
		command = strings.ReplaceAll(command, adminPlaceholder, admin)
	}
	line := func(addr string, _ int) string { return strings.ReplaceAll(command, "{addr}", addr) }
	var in *instance
	var err error
	if port != 0 {
		in, err = startOnPort(ctx, "server", "ws", port, line, timeout)
	} else {
		in, err = startListener(ctx, "server", "ws", line, timeout)
	}
	if err != nil {
		return nil, err
	}
	in.metrics = in.addr
	if admin != "" {
		in.metrics = admin
	}
	return in, nil
}

// startNATS starts the nats-server binary bin on a free loopback port and
// waits until it listens; its url is nats://127.0.0.1:PORT. With js it
// runs JetStream, its store in a fresh temporary directory that goes when
// it stops.
func startNATS(ctx context.Context, bin string, js bool, timeout time.Duration) (*instance, error) {
	dir := ""
	if js {
		d, err := os.MkdirTemp("", "chatbench-nats-")
		if err != nil {
			return nil, fmt.Errorf("chatbench: a store for nats-server -js: %w", err)
		}
		dir = d
	}
	in, err := startListener(ctx, "nats-server (-nats)", "nats", func(_ string, port int) string {
		if dir != "" {
			return fmt.Sprintf("exec %s -a 127.0.0.1 -p %d -js -sd %s", shellQuote(bin), port, shellQuote(dir))
		}
		return fmt.Sprintf("exec %s -a 127.0.0.1 -p %d", shellQuote(bin), port)
	}, timeout)
	if err != nil {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	in.dir = dir
	return in, nil
}

// shellQuote quotes s as one word for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// startListener picks a free loopback port, starts the command line
// gives for it with sh -c, in a process group of its own, and waits until
// it listens there. What names the process in errors; scheme begins its
// url.
func startListener(ctx context.Context, what, scheme string, line func(addr string, port int) string, timeout time.Duration) (*instance, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	return startOnPort(ctx, what, scheme, port, line, timeout)
}

// startOnPort is startListener on a given port, which other instances may
// share (SO_REUSEPORT): it then waits until a listener on the port is the
// started command's, not only until the port answers.
func startOnPort(ctx context.Context, what, scheme string, port int, line func(addr string, port int) string, timeout time.Duration) (*instance, error) {
	in := &instance{addr: "127.0.0.1:" + strconv.Itoa(port), port: port}
	in.url = scheme + "://" + in.addr
	if err := in.start(ctx, what, line(in.addr, port), port, timeout); err != nil {
		return nil, err
	}
	return in, nil
}

// start runs line for startOnPort.
func (in *instance) start(ctx context.Context, what, line string, port int, timeout time.Duration) error {
	in.line = line
	in.output = &tailBuffer{max: 8 << 10}
	in.cmd = exec.Command("sh", "-c", line)
	in.cmd.Stdout = in.output
	in.cmd.Stderr = in.output
	// Its own process group, so that stopping it also stops what
	// `sh -c` or `go run` started below it.
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		return fmt.Errorf("chatbench: starting %q: %w", line, err)
	}
	in.exited = make(chan struct{})
	go func() { _ = in.cmd.Wait(); close(in.exited) }()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-in.exited:
			return fmt.Errorf("chatbench: %s %q exited before listening on %s; its output:\n%s", what, line, in.addr, in.output.String())
		case <-ctx.Done():
			in.stop()
			return ctx.Err()
		default:
		}
		// Its own listener, found among the command's descendants: on a
		// shared port another instance answers a dial already.
		if pid, err := FindListener(port, in.cmd.Process.Pid); err == nil {
			in.pid = pid
			break
		}
		if time.Now().After(deadline) {
			in.stop()
			return fmt.Errorf("chatbench: %s %q did not listen on %s within %v (-server-timeout); its output:\n%s", what, line, in.addr, timeout, in.output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Sample the process that holds the listener: with `go run` or a
	// shell wrapper that is a descendant, not the process we started.
	for i := 0; i < 20 && in.pid == 0; i++ {
		if pid, err := FindListener(port, in.cmd.Process.Pid); err == nil {
			in.pid = pid
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if in.pid == 0 {
		in.pid = in.cmd.Process.Pid
	}
	return nil
}

// stop ends the started instances, all at once, and then their
// nats-server and hook receiver.
func (t *target) stop() {
	var wg sync.WaitGroup
	for _, in := range t.inst {
		wg.Add(1)
		go func() { defer wg.Done(); in.stop() }()
	}
	wg.Wait()
	if t.nats != nil {
		t.nats.stop()
		t.nats = nil
	}
	if t.hook != nil {
		t.hook.stop()
		t.hook = nil
	}
}

// kill ends the started instances and their nats-server at once
// (SIGKILL to their process groups), for the memory guard; stop then
// reaps them.
func (t *target) kill() {
	for _, in := range append(append([]*instance(nil), t.inst...), t.nats, t.hook) {
		if in != nil && in.cmd != nil && in.cmd.Process != nil {
			_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// stop ends a started server: SIGTERM to its process group, SIGKILL after
// five seconds.
func (in *instance) stop() {
	if in.cmd == nil || in.cmd.Process == nil {
		return
	}
	pgid := in.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-in.exited
	}
	// Whatever the group left behind (a `go run` child) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	in.cmd = nil
	if in.dir != "" {
		_ = os.RemoveAll(in.dir)
		in.dir = ""
	}
}

// metricsAddr is where the first instance serves /metrics.
func (t *target) metricsAddr() string {
	if len(t.inst) == 0 {
		return ""
	}
	if m := t.inst[0].metrics; m != "" {
		return m
	}
	return t.inst[0].addr
}

// addrs lists the instances' host:port, in instance order.
func (t *target) addrs() []string {
	if t.SharedPort && len(t.inst) > 0 {
		return []string{t.inst[0].addr} // the kernel picks the instance
	}
	out := make([]string, len(t.inst))
	for i, in := range t.inst {
		out[i] = in.addr
	}
	return out
}

// pids lists the server's processes, the instances' in instance order
// and then the nats-server's, or nil unless every one is known (a sum
// over some of them would mislead).
func (t *target) pids() []int {
	procs := t.procs()
	if len(procs) == 0 {
		return nil
	}
	out := make([]int, len(procs))
	for i, in := range procs {
		if in.pid == 0 {
			return nil
		}
		out[i] = in.pid
	}
	return out
}

// procs lists the processes whose figures are the server's: the
// instances, and the nats-server that joins them.
func (t *target) procs() []*instance {
	if t.nats == nil {
		return t.inst
	}
	return append(append([]*instance(nil), t.inst...), t.nats)
}

// procName names process i of procs in the report.
func (t *target) procName(i int) string {
	if i >= len(t.inst) {
		return "nats-server"
	}
	return fmt.Sprintf("instance %d", i+1)
}

// sample reads every instance and sums them (CPU, RSS, fds, threads); ok
// only if every instance could be read. At is the time of the last read.
func (t *target) sample() (ProcSample, bool) {
	sum, _, ok := t.sampleEach()
	return sum, ok
}

// sampleEach is sample with the per-instance readings too.
func (t *target) sampleEach() (sum ProcSample, each []ProcSample, ok bool) {
	pids := t.pids()
	if pids == nil {
		return ProcSample{}, nil, false
	}
	for _, pid := range pids {
		s, err := ReadProc(pid)
		if err != nil {
			return ProcSample{}, nil, false
		}
		each = append(each, s)
		sum.CPU += s.CPU
		sum.RSS += s.RSS
		sum.FDs += s.FDs
		sum.Threads += s.Threads
		sum.At = s.At
	}
	if len(each) == 1 {
		sum.PID = each[0].PID
	}
	return sum, each, true
}

// cpu is the CPU time of every process of the server together.
func (t *target) cpu() (time.Duration, error) {
	var d time.Duration
	each, err := t.cpuEach()
	for _, x := range each {
		d += x
	}
	return d, err
}

// cpuEach is the CPU time of each process of the server, in pids order.
func (t *target) cpuEach() ([]time.Duration, error) {
	var out []time.Duration
	for _, pid := range t.pids() {
		x, err := ReadProcCPU(pid)
		if err != nil {
			return out, err
		}
		out = append(out, x)
	}
	return out, nil
}

// rss is the resident set of every process of the server together.
func (t *target) rss() (int64, error) { return sumRSS(t.pids()) }

func sumRSS(pids []int) (int64, error) {
	var n int64
	for _, pid := range pids {
		x, err := ReadProcRSS(pid)
		if err != nil {
			return n, err
		}
		n += x
	}
	return n, nil
}

// serverOutput is the tail of the started instances' output.
func (t *target) serverOutput() string {
	var parts []string
	for i, in := range t.inst {
		if in.output == nil {
			continue
		}
		out := in.output.String()
		if len(t.inst) > 1 {
			out = fmt.Sprintf("[instance %d, %s]\n%s", i+1, in.addr, out)
		}
		parts = append(parts, out)
	}
	if t.nats != nil && t.nats.output != nil {
		parts = append(parts, fmt.Sprintf("[nats-server, %s]\n%s", t.nats.url, t.nats.output.String()))
	}
	return strings.Join(parts, "\n")
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

func splitPort(addr string) (string, int, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			var p int
			_, err := fmt.Sscanf(addr[i+1:], "%d", &p)
			return addr[:i], p, err
		}
	}
	return "", 0, errors.New("chatbench: no port")
}

// killInstance SIGKILLs instance i's process group (a node dying) and
// waits until it is gone. It returns the CPU the process used, read just
// before the kill (zero if it could not be read).
func (t *target) killInstance(i int) time.Duration {
	in := t.inst[i]
	if in.cmd == nil || in.cmd.Process == nil {
		return 0
	}
	cpu, _ := ReadProcCPU(in.pid)
	_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
	<-in.exited
	in.cmd = nil
	return cpu
}

// restartInstance starts instance i's command again, on its port, after
// killInstance, and waits until it listens.
func (t *target) restartInstance(ctx context.Context, i int, timeout time.Duration) error {
	in := t.inst[i]
	if in.line == "" {
		return fmt.Errorf("chatbench: instance %d was not started by chatbench: it cannot be started again", i+1)
	}
	in.pid = 0
	if err := in.start(ctx, "server", in.line, in.port, timeout); err != nil {
		return fmt.Errorf("instance %d started again: %w", i+1, err)
	}
	return nil
}
