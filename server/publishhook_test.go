package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pubhook"
	"chatd/server/pusher"

	"github.com/gorilla/websocket"
)

// pubHookReceiver is a backend's publish hook: it checks each POST's
// signature and answers by what the message says: "rewrite" is replaced
// by "rewritten", "reject" is rejected, "stall" is answered after the
// hook's timeout (never, as far as chatd is concerned), "fail" gets a 500,
// "junk" a 200 that is no action, "slow" is allowed after 30 ms; anything
// else is allowed.
type pubHookReceiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret string

	mu   sync.Mutex
	seen []pubHookBody // in the order received
	bad  []string      // signature or body problems
}

type pubHookBody struct {
	Kind     string  `json:"kind"`
	Room     *string `json:"room"`
	Channel  string  `json:"channel"`
	Event    string  `json:"event"`
	UserID   string  `json:"user_id"`
	SocketID string  `json:"socket_id"`
	Data     string  `json:"data"`
	Encoding string  `json:"encoding"`
	TimeMS   int64   `json:"time_ms"`
}

func newPubHookReceiver(t testing.TB, secret string) *pubHookReceiver {
	h := &pubHookReceiver{t: t, secret: secret}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *pubHookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var b pubHookBody
	err := json.Unmarshal(raw, &b)
	h.mu.Lock()
	if sig := r.Header.Get("X-Pusher-Signature"); sig != pubhook.Sign(h.secret, raw) {
		h.bad = append(h.bad, "bad signature "+sig+" for "+string(raw))
	}
	if err != nil || b.TimeMS == 0 {
		h.bad = append(h.bad, fmt.Sprintf("bad body %q: %v", raw, err))
	}
	h.seen = append(h.seen, b)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch d := b.Data; {
	case strings.Contains(d, "rewrite"):
		json.NewEncoder(w).Encode(map[string]string{"action": "replace", "data": strings.Replace(d, "rewrite", "rewritten", 1)})
	case strings.Contains(d, "reject"):
		io.WriteString(w, `{"action":"reject","reason":"not on this server"}`)
	case strings.Contains(d, "stall"):
		<-r.Context().Done() // chatd gives up first
	case strings.Contains(d, "fail"):
		http.Error(w, "backend down", http.StatusInternalServerError)
	case strings.Contains(d, "junk"):
		io.WriteString(w, `{"verdict":"fine"}`)
	case strings.Contains(d, "slow"):
		time.Sleep(30 * time.Millisecond)
		io.WriteString(w, `{"action":"allow"}`)
	default:
		io.WriteString(w, `{"action":"allow"}`)
	}
}

func (h *pubHookReceiver) check() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) > 0 {
		h.t.Fatalf("publish hook receiver: %s", strings.Join(h.bad, "; "))
	}
}

func (h *pubHookReceiver) bodies() []pubHookBody {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]pubHookBody(nil), h.seen...)
}

// readTexts reads n messages from c.
func readTexts(t testing.TB, c *websocket.Conn, n int, within time.Duration) []string {
	t.Helper()
	var got []string
	c.SetReadDeadline(time.Now().Add(within))
	for len(got) < n {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(m))
	}
	return got
}

func dialPlain(t testing.TB, s *Server, path string) *websocket.Conn {
	t.Helper()
	c, status, reason := dialToken(t, s, path, "")
	if c == nil {
		t.Fatalf("dial %s: %d %q", path, status, reason)
	}
	return c
}

func TestRawPublishHookFailOpen(t *testing.T) {
	hook := newPubHookReceiver(t, pusher.DefaultAppSecret)
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0",
		PublishHook: pubhook.Config{URL: hook.srv.URL, Timeout: 400 * time.Millisecond}})
	sender := dialPlain(t, s, "/chat/r")
	member := dialPlain(t, s, "/chat/r")
	otherSender := dialPlain(t, s, "/chat/elsewhere")
	otherMember := dialPlain(t, s, "/chat/elsewhere")
	waitConns(t, s, 4)
	sent := []string{"allow 1", "rewrite 2", "reject 3", "allow 4", "stall 5", "fail 6", "junk 7", "allow 8"}
	for _, m := range sent {
		if err := sender.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// While the sender's "stall 5" waits for its timeout, another room's
	// sender is not held up.
	testutil.CheckFor(t, 5*time.Second, func() error {
		for _, b := range hook.bodies() {
			if b.Data == "stall 5" {
				return nil
			}
		}
		return fmt.Errorf("the hook has not seen stall 5")
	})
	start := time.Now()
	if err := otherSender.WriteMessage(websocket.TextMessage, []byte("meanwhile")); err != nil {
		t.Fatal(err)
	}
	if got := readTexts(t, otherMember, 1, 5*time.Second); got[0] != "meanwhile" {
		t.Fatalf("other room got %q", got)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("another room's message took %v while a stalled one waited", d)
	}
	want := []string{"allow 1", "rewritten 2", "allow 4", "stall 5", "fail 6", "junk 7", "allow 8"}
	if got := readTexts(t, member, len(want), 10*time.Second); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("member got %q, want %q", got, want)
	}
	hook.check()
	var order []string
	for _, b := range hook.bodies() {
		if b.Room != nil && *b.Room == "r" {
			order = append(order, b.Data)
			if b.Kind != "raw" || b.SocketID == "" {
				t.Errorf("body %+v: want kind raw and a socket_id", b)
			}
		}
	}
	if strings.Join(order, "|") != strings.Join(sent, "|") {
		t.Fatalf("hook asked about %q, want %q in order", order, sent)
	}
	waitMetric(t, s, `chatd_publish_hook_decisions_total{action="replace",hook="raw"}`, 1)
	waitMetric(t, s, `chatd_publish_hook_decisions_total{action="reject",hook="raw"}`, 1)
	waitMetric(t, s, `chatd_publish_hook_failures_total{failure="timeout",hook="raw",policy="open"}`, 1)
	waitMetric(t, s, `chatd_publish_hook_failures_total{failure="error",hook="raw",policy="open"}`, 1)
	waitMetric(t, s, `chatd_publish_hook_failures_total{failure="bad_answer",hook="raw",policy="open"}`, 1)
	// The sender was told nothing and gets nothing of its own.
	sender.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, m, err := sender.ReadMessage(); err == nil {
		t.Fatalf("sender got %q", m)
	}
}

func TestRawPublishHookFailClosedAndHistory(t *testing.T) {
	hook := newPubHookReceiver(t, "hook-secret")
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0", HistorySize: 50,
		PublishHook: pubhook.Config{URL: hook.srv.URL, Key: "k", Secret: "hook-secret", Timeout: 200 * time.Millisecond, FailClosed: true}})
	sender := dialPlain(t, s, "/chat/kept")
	member := dialPlain(t, s, "/chat/kept")
	waitConns(t, s, 2)
	for _, m := range []string{"stall 1", "fail 2", "junk 3", "rewrite 4", "allow 5"} {
		if err := sender.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"rewritten 4", "allow 5"}
	if got := readTexts(t, member, 2, 10*time.Second); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("member got %q, want %q", got, want)
	}
	// A late joiner's history holds what was published: the replacement.
	late := dialPlain(t, s, "/chat/kept?history=10")
	if got := readTexts(t, late, 2, 5*time.Second); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("history replayed %q, want %q", got, want)
	}
	hook.check()
	for _, f := range []string{"timeout", "error", "bad_answer"} {
		waitMetric(t, s, `chatd_publish_hook_failures_total{failure="`+f+`",hook="raw",policy="closed"}`, 1)
	}
}

// TestRawPublishHookOrderAndPause: a sender's burst waits on a slow
// backend (30 ms a message) in order; the sender's socket is not read
// meanwhile (no more than one read's messages are queued at the hook);
// another sender in the same room is decided concurrently.
func TestRawPublishHookOrderAndPause(t *testing.T) {
	hook := newPubHookReceiver(t, pusher.DefaultAppSecret)
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0", HistorySize: -1,
		PublishHook: pubhook.Config{URL: hook.srv.URL, Timeout: 2 * time.Second}})
	a := dialPlain(t, s, "/chat/o")
	b := dialPlain(t, s, "/chat/o")
	member := dialPlain(t, s, "/chat/o")
	waitConns(t, s, 3)
	const n = 20
	go func() {
		for i := range n {
			a.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "slow a%02d", i))
		}
	}()
	go func() {
		for i := range n {
			b.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "slow b%02d", i))
		}
	}()
	start := time.Now()
	got := readTexts(t, member, 2*n, 20*time.Second)
	took := time.Since(start)
	var fromA, fromB []string
	for _, m := range got {
		if strings.HasPrefix(m, "slow a") {
			fromA = append(fromA, m)
		} else {
			fromB = append(fromB, m)
		}
	}
	for i := range n {
		if fromA[i] != fmt.Sprintf("slow a%02d", i) || fromB[i] != fmt.Sprintf("slow b%02d", i) {
			t.Fatalf("out of order: a %q, b %q", fromA, fromB)
		}
	}
	// Serial per sender (n x 30 ms each), concurrent across senders.
	if took > time.Duration(n)*30*time.Millisecond*3/2+time.Second {
		t.Errorf("two senders' %d messages each took %v: not decided concurrently", n, took)
	}
	hook.check()
}

// TestPusherPublishHook runs pusher/jstest/publishhook.mjs (pusher-js and
// Laravel Echo whispers) against chatd with the default app's publish hook
// pointed at the receiver, fail-open and fail-closed.
func TestPusherPublishHook(t *testing.T) {
	node, dir := jstestDir(t)
	for _, policy := range []string{"open", "closed"} {
		t.Run(policy, func(t *testing.T) {
			hook := newPubHookReceiver(t, pusher.DefaultAppSecret)
			app := pusher.DefaultApp()
			app.PublishHook = pubhook.Config{URL: hook.srv.URL, Timeout: time.Second, FailClosed: policy == "closed"}
			apps, err := pusher.NewApps(app)
			if err != nil {
				t.Fatal(err)
			}
			s := newTestServer(t, Config{Apps: apps, AdminAddr: "127.0.0.1:0"})
			cmd := exec.Command(node, "--test", "--test-force-exit", "publishhook.mjs")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "CHATD_URL=http://"+s.Addr().String(), "CHATD_HOOK_POLICY="+policy)
			cmd.WaitDelay = 5 * time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node publishhook.mjs: %v\n%s", err, out)
			}
			hook.check()
			var kinds []string
			for _, b := range hook.bodies() {
				if b.Kind != "client_event" || b.Event != "client-msg" || b.SocketID == "" {
					t.Errorf("hook body %+v: want a client_event client-msg with a socket_id", b)
				}
				kinds = append(kinds, b.Kind)
			}
			if len(kinds) != 8 {
				t.Errorf("hook asked %d times, want 8 (7 whispers and another channel's)", len(kinds))
			}
			waitMetric(t, s, `chatd_publish_hook_failures_total{failure="timeout",hook="app:chatd",policy="`+policy+`"}`, 1)
			waitMetric(t, s, `chatd_publish_hook_decisions_total{action="replace",hook="app:chatd"}`, 1)
		})
	}
}

// BenchmarkRawPublishHook: one raw sender's messages to one member, with
// the publish hook off and on (a local receiver that allows everything).
// ns/op is the wall time per message delivered, cpu-ns/op the process's
// CPU (chatd, the receiver and the gorilla clients together) per message.
func BenchmarkRawPublishHook(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "hook=off"
		if on {
			name = "hook=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := Config{HistorySize: -1}
			if on {
				hook := newPubHookReceiver(b, pusher.DefaultAppSecret)
				cfg.PublishHook = pubhook.Config{URL: hook.srv.URL}
			}
			s := newTestServer(b, cfg)
			sender := dialPlain(b, s, "/chat/bench")
			member := dialPlain(b, s, "/chat/bench")
			waitConns(b, s, 2)
			msg := []byte("a message of some forty bytes, say .....")
			done := make(chan error, 1)
			b.ResetTimer()
			cpu0 := processCPU()
			go func() {
				for range b.N {
					if err := sender.WriteMessage(websocket.TextMessage, msg); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			member.SetReadDeadline(time.Now().Add(5 * time.Minute))
			for i := range b.N {
				if _, _, err := member.ReadMessage(); err != nil {
					b.Fatalf("message %d: %v", i, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
