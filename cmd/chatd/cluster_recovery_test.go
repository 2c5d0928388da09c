package main

import (
	"bufio"
	"fmt"
	"io"
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

// balancer is a TCP load balancer in front of the cluster's nodes: each
// new connection goes to the next live node; cut drops client connections
// (a blinking network).
type balancer struct {
	ln net.Listener

	mu    sync.Mutex
	nodes []string
	next  int
	conns map[net.Conn]net.Conn // client -> node
}

func startBalancer(t *testing.T) *balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, conns: map[net.Conn]net.Conn{}}
	t.Cleanup(func() {
		ln.Close()
		b.cut(-1)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *balancer) setNodes(addrs ...string) {
	b.mu.Lock()
	b.nodes = addrs
	b.mu.Unlock()
}

func (b *balancer) serve(c net.Conn) {
	b.mu.Lock()
	var addr string
	if len(b.nodes) > 0 {
		addr = b.nodes[b.next%len(b.nodes)]
		b.next++
	}
	b.mu.Unlock()
	u, err := net.Dial("tcp", addr)
	if err != nil {
		c.Close()
		return
	}
	b.mu.Lock()
	b.conns[c] = u
	b.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// cut drops n client connections (all for n < 0).
func (b *balancer) cut(n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	cut := 0
	for c, u := range b.conns {
		if n >= 0 && cut >= n {
			break
		}
		c.Close()
		u.Close()
		cut++
	}
	return cut
}

// TestChatdClusterRecovery: pusher-js and Laravel Echo clients with the
// recovery plugin (pusher/jstest/recovery-cluster.mjs), spread by a
// balancer over three chatd nodes and a real nats-server, while numbered
// events are published through the HTTP API: a node is SIGKILLed and
// started again, every node is restarted in turn with SIGTERM, single
// clients' connections are cut. Every client must end with every event
// exactly once, in order.
func TestChatdClusterRecovery(t *testing.T) {
	node, dir := jstest(t)
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	startNATSProc(t, natsBin, port, t.TempDir())
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	ids := []string{"a", "b", "c"}
	nodes := map[string]*chatdProc{}
	start := func(id string) {
		nodes[id] = startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", id, "-drain-timeout", "1s")
	}
	for _, id := range ids {
		start(id)
	}
	lb := startBalancer(t)
	live := func() {
		var addrs []string
		for _, id := range ids {
			if n := nodes[id]; n != nil {
				addrs = append(addrs, n.addr)
			}
		}
		lb.setNodes(addrs...)
	}
	live()

	const total = 90
	channel := "private-orders-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cmd := exec.Command(node, "recovery-cluster.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATD_LB=http://"+lb.ln.Addr().String(),
		"CHATD_CHANNEL="+channel,
		"CHATD_EVENTS="+strconv.Itoa(total), "CHATD_WAIT_MS=60000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var out []string
	ready := time.After(30 * time.Second)
	for ok := false; !ok; {
		select {
		case l, more := <-lines:
			if !more {
				t.Fatalf("the clients ended before READY:\n%s", strings.Join(out, "\n"))
			}
			out = append(out, l)
			ok = l == "READY"
		case <-ready:
			t.Fatalf("the clients were not subscribed in 30s:\n%s", strings.Join(out, "\n"))
		}
	}

	// The events go to a node the test is not stopping at that moment.
	target := "c"
	publish := func(n int) {
		body := fmt.Sprintf(`{"name":"n","channel":%q,"data":"{\"n\":%d}"}`, channel, n)
		status, resp := signedPost(t, nodes[target].addr, "/apps/chatd/events", body)
		if status != 200 {
			t.Fatalf("event %d to %s: %d %s", n, target, status, resp)
		}
	}
	stop := func(id string, sig syscall.Signal) {
		nodes[id].cmd.Process.Signal(sig)
		<-nodes[id].waitDone
		nodes[id] = nil
		live()
	}
	for n := 1; n <= total; n++ {
		switch n {
		case 15: // a dies without a word, and comes back
			stop("a", syscall.SIGKILL)
		case 25:
			start("a")
			live()
		case 35, 50, 65: // a rolling restart: b, then c (the target moves), then a
			id := map[int]string{35: "b", 50: "c", 65: "a"}[n]
			if id == target {
				target = "b"
			}
			stop(id, syscall.SIGTERM)
			start(id)
			live()
		case 75, 80: // single clients blink
			lb.cut(1)
		}
		publish(n)
		time.Sleep(30 * time.Millisecond)
	}
	for l := range lines {
		out = append(out, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("clients: %v\n%s", err, strings.Join(out, "\n"))
	}
	t.Logf("clients:\n%s", strings.Join(out, "\n"))
}
