package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

// Cluster history through JetStream, with real processes: three chatd
// nodes and a nats-server. Raw messages sent concurrently from two nodes
// reach every member on every node in one order (the stream's); a late
// joiner anywhere gets the room's last N; a Pusher subscriber whose node is
// SIGKILLed resumes exactly on another node, and on the first node once it
// is started again (the stream, not a node, holds the history).
func TestChatdClusterHistory(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	startNATSProc(t, natsBin, port, t.TempDir())
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	nodes := map[string]*chatdProc{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", id)
	}
	for id, n := range nodes {
		testutil.CheckFor(t, 15*time.Second, func() error {
			if code := readyz(t, n.admin); code != 200 {
				return fmt.Errorf("node %s /readyz %d", id, code)
			}
			return nil
		})
	}

	t.Run("raw order and late joiners", func(t *testing.T) {
		var members []member
		for _, id := range []string{"a", "a", "b", "c"} {
			members = append(members, join(t, nodes[id].addr, "hist"))
		}
		sa := join(t, nodes["a"].addr, "hist")
		sb := join(t, nodes["b"].addr, "hist")
		// Every member's node must follow the room before anything is sent.
		time.Sleep(500 * time.Millisecond)
		const each = 40
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 1; i <= each; i++ {
				sb.c.WriteMessage(websocket.TextMessage, []byte("b"+strconv.Itoa(i)))
			}
		}()
		for i := 1; i <= each; i++ {
			sa.c.WriteMessage(websocket.TextMessage, []byte("a"+strconv.Itoa(i)))
		}
		<-done
		var orders []string
		for i, m := range members {
			var got []string
			for len(got) < 2*each {
				got = append(got, nextText(t, m.ch, fmt.Sprintf("member %d", i)))
			}
			orders = append(orders, strings.Join(got, " "))
		}
		for i := range orders {
			if orders[i] != orders[0] {
				t.Fatalf("member %d saw\n%s\nmember 0 saw\n%s", i, orders[i], orders[0])
			}
		}
		// Each sender's own messages keep their order, and it gets none of its own.
		checkSubsequence(t, orders[0], "a", each)
		checkSubsequence(t, orders[0], "b", each)
		// A late joiner on c asks for the last 5.
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+nodes["c"].addr+"/chat/hist?history=5", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		defer c.Close()
		late := readLoop(c)
		all := strings.Fields(orders[0])
		for _, want := range all[len(all)-5:] {
			if got := nextText(t, late, "late joiner"); got != want {
				t.Fatalf("late joiner got %q, want %q (last five of %v)", got, want, all)
			}
		}
	})

	t.Run("pusher recovery across a killed node", func(t *testing.T) {
		_, msgs := pusherSubscribe(t, nodes["a"].addr, "news", "")
		ok := nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
		if ok.Position == "" {
			t.Fatalf("no position in %+v", ok)
		}
		trigger(t, nodes["b"].addr, "news", "one")
		seen := nextEvent(t, msgs, "e")
		if seen.Data != "one" {
			t.Fatalf("got %+v", seen)
		}
		if err := nodes["a"].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-nodes["a"].waitDone
		for i := 2; i <= 6; i++ {
			trigger(t, nodes["b"].addr, "news", strconv.Itoa(i))
		}
		_, msgs = pusherSubscribe(t, nodes["c"].addr, "news", `,"chatd_since":"`+seen.Position+`"`)
		nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
		last := seen
		for i := 2; i <= 6; i++ {
			ev := nextEvent(t, msgs, "e")
			if ev.Data != strconv.Itoa(i) {
				t.Fatalf("resumed on c: got %+v, want %d", ev, i)
			}
			last = ev
		}
		// The killed node, started again, honours the same positions.
		nodes["a"] = startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "a")
		trigger(t, nodes["c"].addr, "news", "7")
		_, msgs = pusherSubscribe(t, nodes["a"].addr, "news", `,"chatd_since":"`+last.Position+`"`)
		nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
		if ev := nextEvent(t, msgs, "e"); ev.Data != "7" {
			t.Fatalf("resumed on the restarted node: %+v", ev)
		}
		// The HTTP API reads the stream.
		status, body := signedGet(t, nodes["b"].addr, "/apps/chatd/channels/news/history", "limit=3")
		var h struct {
			Events []struct{ Data, Position string }
		}
		json.Unmarshal([]byte(body), &h)
		if status != 200 || len(h.Events) != 3 || h.Events[2].Data != "7" || h.Events[0].Data != "5" {
			t.Fatalf("history API: %d %s", status, body)
		}
	})
}

func nextText(t *testing.T, ch <-chan wsEvent, who string) string {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok || ev.err != nil {
			t.Fatalf("%s: connection ended: %v", who, ev.err)
		}
		return ev.data
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing in 10s", who)
	}
	return ""
}

// checkSubsequence checks that prefix1..prefixN appear in order in the
// space-separated order.
func checkSubsequence(t *testing.T, order, prefix string, n int) {
	t.Helper()
	next := 1
	for _, w := range strings.Fields(order) {
		if strings.HasPrefix(w, prefix) {
			if w != prefix+strconv.Itoa(next) {
				t.Fatalf("%s's messages out of order: %s after %s%d in %s", prefix, w, prefix, next-1, order)
			}
			next++
		}
	}
	if next != n+1 {
		t.Fatalf("%d of %s's %d messages", next-1, prefix, n)
	}
}

// Without JetStream (nats-server without -js) the cluster serves rooms
// without history rather than waiting for it, and /readyz says why.
func TestChatdClusterHistoryWithoutJetStream(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	ns := exec.Command(natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Process.Kill(); ns.Wait() })
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	testutil.CheckFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err
	})
	a := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "a")
	b := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "b")
	for _, n := range []*chatdProc{a, b} {
		testutil.CheckFor(t, 10*time.Second, func() error {
			resp, err := http.Get("http://" + n.admin + "/readyz")
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "history unavailable") {
				return fmt.Errorf("/readyz %d %q", resp.StatusCode, body)
			}
			return nil
		})
		if !strings.Contains(n.stderr.String(), "cluster history unavailable") {
			t.Fatalf("no word of it in the log:\n%s", n.stderr.String())
		}
	}
	onA := join(t, a.addr, "plain")
	onB := join(t, b.addr, "plain")
	time.Sleep(300 * time.Millisecond)
	onA.c.WriteMessage(websocket.TextMessage, []byte("across without history"))
	waitMessage(t, onB.ch, "b's member", "across without history")
}
