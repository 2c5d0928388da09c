package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	"github.com/gorilla/websocket"
)

// pusherSubscribe connects to a chatd's default app, subscribes to channel
// with extra fields in pusher:subscribe's data, and returns the connection
// with its messages.
func pusherSubscribe(t *testing.T, addr, channel, extra string) (*websocket.Conn, <-chan wsEvent) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/app/"+pusher.DefaultAppKey+"?protocol=7", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	msgs := readLoop(c)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"`+channel+`"`+extra+`}}`)); err != nil {
		t.Fatal(err)
	}
	return c, msgs
}

type pusherMsg struct {
	Event    string `json:"event"`
	Channel  string `json:"channel"`
	Data     string `json:"data"`
	Position string `json:"chatd_position"`
}

func nextEvent(t *testing.T, msgs <-chan wsEvent, event string) pusherMsg {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-msgs:
			if !ok || ev.err != nil {
				t.Fatalf("connection ended before %s: %v", event, ev.err)
			}
			var m pusherMsg
			if json.Unmarshal([]byte(ev.data), &m) == nil && m.Event == event {
				return m
			}
		case <-timeout:
			t.Fatalf("%s did not arrive in 10s", event)
		}
	}
}

// A single chatd keeps history in memory: after it is killed and started
// again, a client resuming from a position of the old process is told it
// cannot be honoured (a new epoch), never given a silent gap; a position of
// the new process resumes exactly.
func TestChatdHistoryNewEpochAfterRestart(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	first := startChatd(t, bin, "-addr", "127.0.0.1:0")
	_, msgs := pusherSubscribe(t, first.addr, "news", "")
	ok := nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
	trigger(t, first.addr, "news", "one")
	ev := nextEvent(t, msgs, "e")
	if ev.Data != "one" || !strings.HasSuffix(ev.Position, ":1") || !strings.HasSuffix(ok.Position, ":0") {
		t.Fatalf("event %+v after subscription %+v", ev, ok)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.waitDone

	second := startChatd(t, bin, "-addr", "127.0.0.1:0")
	trigger(t, second.addr, "news", "two")
	_, msgs = pusherSubscribe(t, second.addr, "news", `,"chatd_since":"`+ev.Position+`"`)
	ok = nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
	failed := nextEvent(t, msgs, pusher.EventRecoveryFailed)
	var why struct{ Code, Position string }
	json.Unmarshal([]byte(failed.Data), &why)
	if why.Code != "epoch_changed" || why.Position != ok.Position || !strings.HasSuffix(ok.Position, ":1") {
		t.Fatalf("recovery_failed %+v (%s) after subscription %+v", why, failed.Data, ok)
	}
	// From the new position, exactly what came after.
	trigger(t, second.addr, "news", "three")
	_, msgs = pusherSubscribe(t, second.addr, "news", `,"chatd_since":"`+ok.Position+`"`)
	nextEvent(t, msgs, "pusher_internal:subscription_succeeded")
	if ev := nextEvent(t, msgs, "e"); ev.Data != "three" {
		t.Fatalf("resumed with %+v, want three", ev)
	}
}

// trigger publishes event "e" with data to channel through the demo app's
// signed HTTP API.
func trigger(t *testing.T, addr, channel, data string) {
	t.Helper()
	body := fmt.Sprintf(`{"name":"e","channel":%q,"data":%q}`, channel, data)
	status, resp := signedPost(t, addr, "/apps/"+pusher.DefaultAppID+"/events", body)
	if status != 200 {
		t.Fatalf("trigger: %d %s", status, resp)
	}
}

// signedPost POSTs body to path of chatd's HTTP API, signed for the
// default app, and returns the status and the answer.
func signedPost(t *testing.T, addr, path, body string) (int, string) {
	t.Helper()
	q := url.Values{"auth_key": {pusher.DefaultAppKey}, "auth_timestamp": {strconv.FormatInt(time.Now().Unix(), 10)},
		"auth_version": {"1.0"}, "body_md5": {pusher.BodyMD5([]byte(body))}}
	q.Set("auth_signature", pusher.SignRequest(pusher.DefaultAppSecret, "POST", path, q))
	resp, err := http.Post("http://"+addr+path+"?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signedGet GETs path with query from chatd's HTTP API, signed for the
// default app.
func signedGet(t *testing.T, addr, path, query string) (int, string) {
	t.Helper()
	q, _ := url.ParseQuery(query)
	q.Set("auth_key", pusher.DefaultAppKey)
	q.Set("auth_timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	q.Set("auth_version", "1.0")
	q.Set("auth_signature", pusher.SignRequest(pusher.DefaultAppSecret, "GET", path, q))
	resp, err := http.Get("http://" + addr + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
