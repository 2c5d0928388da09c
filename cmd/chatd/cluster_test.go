package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

// natsProc is a nats-server process built from its module.
type natsProc struct {
	cmd  *exec.Cmd
	port int
}

// startNATSProc runs nats-server on port with JetStream stored in dir (a
// restart on the same dir keeps what JetStream stored).
func startNATSProc(t *testing.T, bin string, port int, dir string) *natsProc {
	t.Helper()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.CheckFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return &natsProc{cmd, port}
}

func (n *natsProc) kill() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// member is a gorilla client in a raw room of one chatd process.
type member struct {
	c  *websocket.Conn
	ch <-chan wsEvent
}

func join(t *testing.T, addr, room string) member {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/chat/"+room, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return member{c, readLoop(c)}
}

var syncSeq atomic.Int64

// reach has from send until to receives: joins and cluster interest take
// effect asynchronously, so the first messages may go nowhere.
func reach(t *testing.T, from, to member, who string) {
	t.Helper()
	msg := "sync " + strconv.FormatInt(syncSeq.Add(1), 10)
	stop, done := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-done }() // one writer at a time on from
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if from.c.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	waitMessage(t, to.ch, who, msg)
}

// readyz returns the status of a chatd's /readyz.
func readyz(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric scrapes a chatd's admin listener.
func metric(t *testing.T, admin, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestChatdClusterProcesses: chatd processes joined by a real nats-server
// process. A room spans nodes; a node killed with SIGKILL takes only its
// own connections, whose clients carry on on another node; while NATS is
// down each node serves its own members, a node started then serves too
// and says it is waiting for NATS, and after NATS is back cross-node
// delivery resumes by itself.
func TestChatdClusterProcesses(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	store := t.TempDir()
	ns := startNATSProc(t, natsBin, port, store)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	a := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "a")
	b := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "b")
	onA := join(t, a.addr, "fault")
	onB := join(t, b.addr, "fault")
	onB2 := join(t, b.addr, "fault")
	reach(t, onA, onB, "b's member, from a")
	reach(t, onB, onA, "a's member, from b")
	if err := onA.c.WriteMessage(websocket.TextMessage, []byte("across")); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, onB.ch, "b's member", "across")
	waitMessage(t, onB2.ch, "b's second member", "across")

	// SIGKILL a: b's members are untouched; a's client reconnects to b.
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-onA.ch:
		if ev.err == nil {
			t.Fatalf("a's member got %q after a was killed", ev.data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a's member did not notice a's death")
	}
	back := join(t, b.addr, "fault")
	reach(t, back, onB, "b's member, from the client that came back")
	if err := onB2.c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, back.ch, "the client that came back", "still here")

	// NATS down: b serves its own members; c starts, serves, and says so.
	ns.kill()
	if err := onB.c.WriteMessage(websocket.TextMessage, []byte("local while NATS is down")); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, onB2.ch, "b's second member", "local while NATS is down")
	start := time.Now()
	c := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "c")
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("chatd took %v to start with NATS down", el)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if !strings.Contains(c.stderr.String(), "NATS not reachable yet; retrying") {
			return fmt.Errorf("c does not say it is waiting for NATS")
		}
		return nil
	})
	if got := metric(t, c.admin, "chatd_broker_connected"); got != 0 {
		t.Fatalf("c: chatd_broker_connected %d while NATS is down", got)
	}
	if code := readyz(t, c.admin); code != http.StatusServiceUnavailable {
		t.Fatalf("c: /readyz %d while NATS is down, want 503", code)
	}
	onC := join(t, c.addr, "fault")
	onC2 := join(t, c.addr, "fault")
	reach(t, onC, onC2, "c's second member (same node, NATS down)")

	// NATS back on its port: b and c reconnect, re-subscribe, and carry
	// each other's messages again.
	startNATSProc(t, natsBin, port, store)
	testutil.CheckFor(t, 15*time.Second, func() error {
		if metric(t, b.admin, "chatd_broker_connected") != 1 || metric(t, c.admin, "chatd_broker_connected") != 1 {
			return fmt.Errorf("b or c not reconnected")
		}
		return nil
	})
	if code := readyz(t, c.admin); code != http.StatusOK {
		t.Fatalf("c: /readyz %d once NATS is back, want 200", code)
	}
	reach(t, onC, onB, "b's member, from c after the NATS restart")
	reach(t, onB, onC, "c's member, from b after the NATS restart")
	if got := metric(t, b.admin, "chatd_broker_reconnects_total"); got < 1 {
		t.Fatalf("b: chatd_broker_reconnects_total %d after a NATS restart", got)
	}
}
