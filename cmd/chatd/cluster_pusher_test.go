package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	"github.com/gorilla/websocket"
)

// pmsg is a Pusher message as a client sees it, with its arrival time.
type pmsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Raw     json.RawMessage `json:"data"`
	data    string
	at      time.Time
}

// presenceClient is a Pusher connection subscribed to one presence
// channel; it files what it receives.
type presenceClient struct {
	c      *websocket.Conn
	mu     sync.Mutex
	msgs   []pmsg
	closed error
}

// joinPresence connects to addr's default app and subscribes to channel
// as user.
func joinPresence(t *testing.T, addr, channel, user string) *presenceClient {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/app/"+pusher.DefaultAppKey+"?protocol=7", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	pc := &presenceClient{c: c}
	socketID := make(chan string, 1)
	go func() {
		for {
			_, b, err := c.ReadMessage()
			pc.mu.Lock()
			if err != nil {
				pc.closed = err
				pc.mu.Unlock()
				return
			}
			var m pmsg
			json.Unmarshal(b, &m)
			if json.Unmarshal(m.Raw, &m.data) != nil {
				m.data = string(m.Raw)
			}
			m.at = time.Now()
			pc.msgs = append(pc.msgs, m)
			pc.mu.Unlock()
			if m.Event == "pusher:connection_established" {
				var d struct {
					SocketID string `json:"socket_id"`
				}
				json.Unmarshal([]byte(m.data), &d)
				socketID <- d.SocketID
			}
		}
	}()
	var id string
	select {
	case id = <-socketID:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s on %s: no connection_established", user, addr)
	}
	app := pusher.DefaultApp()
	cd := fmt.Sprintf(`{"user_id":%q}`, user)
	sub, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{
		"channel": channel, "channel_data": cd, "auth": pusher.ChannelAuth(&app, id, channel, cd)}})
	if err := c.WriteMessage(websocket.TextMessage, sub); err != nil {
		t.Fatal(err)
	}
	pc.wait(t, user+" subscribed", func(m pmsg) bool { return m.Event == "pusher_internal:subscription_succeeded" })
	return pc
}

func (pc *presenceClient) find(match func(pmsg) bool) (pmsg, int) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var first pmsg
	n := 0
	for _, m := range pc.msgs {
		if match(m) {
			if n == 0 {
				first = m
			}
			n++
		}
	}
	return first, n
}

func (pc *presenceClient) wait(t *testing.T, what string, match func(pmsg) bool) pmsg {
	t.Helper()
	var got pmsg
	testutil.CheckFor(t, 30*time.Second, func() error {
		m, n := pc.find(match)
		if n == 0 {
			return fmt.Errorf("no %s yet", what)
		}
		got = m
		return nil
	})
	return got
}

func presenceEvent(event, user string) func(pmsg) bool {
	return func(m pmsg) bool {
		var d struct {
			UserID string `json:"user_id"`
		}
		json.Unmarshal([]byte(m.data), &d)
		return m.Event == "pusher_internal:"+event && d.UserID == user
	}
}

// usersOn returns the members of channel that node addr lists (HTTP API).
func usersOn(t *testing.T, addr, channel string) []string {
	t.Helper()
	app := pusher.DefaultApp()
	path := "/apps/" + app.ID + "/channels/" + channel + "/users"
	q := url.Values{}
	pusher.AuthorizeRequest(&app, "GET", path, q, nil, time.Now())
	r, err := http.Get("http://" + addr + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var d struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	json.Unmarshal(resp, &d)
	var ids []string
	for _, u := range d.Users {
		ids = append(ids, u.ID)
	}
	return ids
}

// TestChatdClusterPusherFaults: Pusher presence across chatd processes and
// a real nats-server process. A node killed with SIGKILL: its users leave
// presence cluster-wide (member_removed once per user, none for a user
// with a tab left elsewhere) within -node-timeout and a heartbeat; its
// clients come back on another node. A node stopped with SIGTERM: its
// clients get 4200 and its presence is gone within a second. NATS
// restarted: nodes keep their members, nobody is removed or added by it,
// and presence changes flow again.
func TestChatdClusterPusherFaults(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	store := t.TempDir()
	ns := startNATSProc(t, natsBin, port, store)
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(port)
	const ch = "presence-faults"
	const timeout = 3 * time.Second
	node := func(id string) *chatdProc {
		return startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", natsURL, "-node-id", id, "-node-timeout", timeout.String())
	}
	a, b, c := node("a"), node("b"), node("c")
	obs := joinPresence(t, c.addr, ch, "observer")
	joinPresence(t, a.addr, ch, "killed")
	joinPresence(t, a.addr, ch, "both")
	bothOnB := joinPresence(t, b.addr, ch, "both")
	termed := joinPresence(t, b.addr, ch, "stopped")
	obs.wait(t, "member_added stopped", presenceEvent("member_added", "stopped"))
	for _, n := range []*chatdProc{a, b, c} {
		testutil.CheckFor(t, 10*time.Second, func() error {
			if got := usersOn(t, n.addr, ch); !slices.Equal(got, []string{"both", "killed", "observer", "stopped"}) {
				return fmt.Errorf("%s lists %v", n.addr, got)
			}
			return nil
		})
	}

	// SIGKILL a.
	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m := obs.wait(t, "member_removed killed", presenceEvent("member_removed", "killed"))
	if el := m.at.Sub(killed); el > timeout+3*time.Second {
		t.Fatalf("member_removed killed came %v after SIGKILL; the bound is %v and a heartbeat", el, timeout)
	} else {
		t.Logf("member_removed of the killed node's user %v after SIGKILL (-node-timeout %v)", el.Round(time.Millisecond), timeout)
	}
	time.Sleep(500 * time.Millisecond)
	if _, n := obs.find(presenceEvent("member_removed", "both")); n != 0 {
		t.Fatal("member_removed both, though both has a tab on b")
	}
	// The killed node's client comes back on c.
	joinPresence(t, c.addr, ch, "killed")
	testutil.CheckFor(t, 10*time.Second, func() error {
		if _, n := obs.find(presenceEvent("member_added", "killed")); n != 2 {
			return fmt.Errorf("member_added killed %d times, want 2 (at first, and back on c)", n)
		}
		return nil
	})
	if _, n := obs.find(presenceEvent("member_removed", "killed")); n != 1 {
		t.Fatalf("member_removed killed %d times", n)
	}

	// SIGTERM b: its clients get 4200, its users are gone within 1 s.
	stopped := time.Now()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"stopped", "both"} {
		m := obs.wait(t, "member_removed "+user, presenceEvent("member_removed", user))
		if el := m.at.Sub(stopped); el > time.Second {
			t.Fatalf("member_removed %s came %v after SIGTERM, want within 1s", user, el)
		}
	}
	for _, pc := range []*presenceClient{termed, bothOnB} {
		testutil.CheckFor(t, 10*time.Second, func() error {
			pc.mu.Lock()
			defer pc.mu.Unlock()
			ce, ok := pc.closed.(*websocket.CloseError)
			if !ok || ce.Code != pusher.CodeReconnect {
				return fmt.Errorf("b's client: %v, want close %d", pc.closed, pusher.CodeReconnect)
			}
			return nil
		})
	}
	if got := b.exitStatus(t, 15*time.Second); got != 0 {
		t.Fatalf("b exited %d", got)
	}

	// NATS restarted on its store: c and d keep their members; no
	// member_removed or member_added comes of it.
	d := node("d")
	joinPresence(t, d.addr, ch, "late")
	obs.wait(t, "member_added late", presenceEvent("member_added", "late"))
	obs.mu.Lock()
	before := len(obs.msgs)
	obs.mu.Unlock()
	ns.kill()
	time.Sleep(time.Second)
	startNATSProc(t, natsBin, port, store)
	want := []string{"killed", "late", "observer"}
	for _, n := range []*chatdProc{c, d} {
		testutil.CheckFor(t, 20*time.Second, func() error {
			if got := metric(t, n.admin, "chatd_broker_connected"); got != 1 {
				return fmt.Errorf("%s not reconnected", n.addr)
			}
			if got := usersOn(t, n.addr, ch); !slices.Equal(got, want) {
				return fmt.Errorf("%s lists %v, want %v", n.addr, got, want)
			}
			return nil
		})
	}
	// Presence flows again: a new user on d reaches c's observer.
	joinPresence(t, d.addr, ch, "after")
	obs.wait(t, "member_added after", presenceEvent("member_added", "after"))
	obs.mu.Lock()
	var spurious []string
	for _, m := range obs.msgs[before:] {
		if strings.HasPrefix(m.Event, "pusher_internal:member_") && !strings.Contains(m.data, `"after"`) {
			spurious = append(spurious, m.Event+" "+m.data)
		}
	}
	obs.mu.Unlock()
	if len(spurious) > 0 {
		t.Fatalf("the NATS restart made presence events: %v", spurious)
	}
}
