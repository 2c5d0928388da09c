package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	"github.com/gorilla/websocket"
)

func TestChatdParseConfigWebhookURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		app  string
	}{
		{"flag, default app", []string{"-app-webhook-url", "http://127.0.0.1:9/hook"}, nil, pusher.DefaultAppID},
		{"env, own app", []string{"-app-id", "1", "-app-key", "k", "-app-secret", "s"}, map[string]string{"CHATD_APP_WEBHOOK_URL": "http://127.0.0.1:9/hook"}, "1"},
	} {
		cfg := mustParse(t, tc.args, envMap(tc.env))
		a, ok := cfg.Apps.ByID(tc.app)
		if !ok || len(a.Webhooks) != 1 || a.Webhooks[0].URL != "http://127.0.0.1:9/hook" || len(a.Webhooks[0].EventTypes) != 0 {
			t.Errorf("%s: app %q webhooks %+v, want the URL with all event types", tc.name, tc.app, a)
		}
	}
	if _, err := parseConfig([]string{"-app-webhook-url", "127.0.0.1:9/hook"}, noEnv, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-app-webhook-url") {
		t.Errorf("a URL without a scheme: %v", err)
	}
}

// TestChatdWebhooksOnSIGTERM: a chatd process with -app-webhook-url posts
// channel_occupied; on SIGTERM it closes its connections with 4200 and
// still delivers the channel_vacated that this causes, retried after the
// receiver's first refusal, before it exits 0.
func TestChatdWebhooksOnSIGTERM(t *testing.T) {
	var mu sync.Mutex
	var events []string
	refusedVacated := false
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b struct {
			Events []struct {
				Name, Channel string
			} `json:"events"`
		}
		json.Unmarshal(body, &b)
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(string(body), "channel_vacated") && !refusedVacated {
			refusedVacated = true
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		for _, e := range b.Events {
			events = append(events, e.Name+" "+e.Channel)
		}
	}))
	defer rcv.Close()
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), events...)
	}

	bin := testutil.BuildInTempDir(t, ".", "chatd")
	proc := startChatd(t, bin, "-addr", "127.0.0.1:0", "-app-webhook-url", rcv.URL+"/hook")
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+proc.addr+"/app/"+pusher.DefaultAppKey+"?protocol=7", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer c.Close()
	msgs := readLoop(c)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"news"}}`)); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, msgs, "subscriber", `{"event":"pusher_internal:subscription_succeeded","channel":"news","data":"{}"}`)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if g := got(); len(g) != 1 || g[0] != "channel_occupied news" {
			return fmt.Errorf("webhook events so far: %q", g)
		}
		return nil
	})

	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitClose(t, msgs, "subscriber"); code != pusher.CodeReconnect {
		t.Errorf("close code %d, want %d", code, pusher.CodeReconnect)
	}
	if status := proc.exitStatus(t, 20*time.Second); status != 0 {
		t.Errorf("exit status %d", status)
	}
	if g := got(); len(g) != 2 || g[1] != "channel_vacated news" {
		t.Errorf("webhooks received by the time chatd exited: %q", g)
	}
}
