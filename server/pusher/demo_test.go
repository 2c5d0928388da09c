package pusher

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func demoPost(t *testing.T, h http.Handler, path string, form url.Values) (int, map[string]string) {
	t.Helper()
	r := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var out map[string]string
	if w.Code == 200 && strings.TrimSpace(w.Body.String()) == "{}" {
		return w.Code, nil
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: body %q: %v", path, w.Body, err)
	}
	return w.Code, out
}

func TestDemoAuthSubscribes(t *testing.T) {
	e := newTestEnv(t)
	h := e.p.DemoHandler()
	s, c := e.connect(t)

	status, out := demoPost(t, h, "/pusher/auth", url.Values{"socket_id": {s.SocketID()}, "channel_name": {"private-demo"}})
	if status != 200 || out["channel_data"] != "" {
		t.Fatalf("private auth: %d %v", status, out)
	}
	send(t, s, "pusher:subscribe", "", map[string]string{"channel": "private-demo", "auth": out["auth"]})
	if m := c.takeOne(t); m.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("private subscribe with demo auth: %+v", m)
	}

	status, out = demoPost(t, h, "/pusher/auth", url.Values{"socket_id": {s.SocketID()}, "channel_name": {"presence-demo"}, "user": {" Ann "}})
	if status != 200 || out["channel_data"] != `{"user_id":"Ann","user_info":{"name":"Ann"}}` {
		t.Fatalf("presence auth: %d %v", status, out)
	}
	send(t, s, "pusher:subscribe", "", map[string]string{"channel": "presence-demo", "auth": out["auth"], "channel_data": out["channel_data"]})
	if m := c.takeOne(t); m.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("presence subscribe with demo auth: %+v", m)
	}

	status, out = demoPost(t, h, "/pusher/user-auth", url.Values{"socket_id": {s.SocketID()}, "user": {"Ann"}})
	if status != 200 {
		t.Fatalf("user-auth: %d %v", status, out)
	}
	send(t, s, "pusher:signin", "", out)
	if m := c.takeOne(t); m.Event != "pusher:signin_success" {
		t.Fatalf("signin with demo auth: %+v", m)
	}

	status, _ = demoPost(t, h, "/pusher/publish", url.Values{"channel": {"private-demo"}, "event": {"said"}, "data": {`{"text":"hi"}`}})
	if m := c.takeOne(t); status != 200 || m.Event != "said" || m.str() != `{"text":"hi"}` {
		t.Fatalf("publish: %d %+v", status, m)
	}
	// JSON bodies work as well.
	r := httptest.NewRequest("POST", "/pusher/publish", strings.NewReader(`{"channel":"private-demo","event":"j","data":{"n":1}}`))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if m := c.takeOne(t); w.Code != 200 || m.Event != "j" || m.str() != `{"n":1}` {
		t.Fatalf("JSON publish: %d %s %+v", w.Code, w.Body, m)
	}

	for name, form := range map[string]url.Values{
		"bad socket":     {"socket_id": {"x"}, "channel_name": {"private-a"}},
		"bad channel":    {"socket_id": {"1.2"}, "channel_name": {"a b"}},
		"public channel": {"socket_id": {"1.2"}, "channel_name": {"news"}},
		"encrypted":      {"socket_id": {"1.2"}, "channel_name": {"private-encrypted-a"}},
		"user too long":  {"socket_id": {"1.2"}, "channel_name": {"presence-a"}, "user": {strings.Repeat("u", 65)}},
	} {
		if status, _ := demoPost(t, h, "/pusher/auth", form); status != 400 {
			t.Errorf("%s: status %d, want 400", name, status)
		}
	}
	if status, _ := demoPost(t, h, "/pusher/publish", url.Values{"channel": {"a"}}); status != 400 {
		t.Errorf("publish without event: status %d, want 400", status)
	}
}

func TestDemoOnlyForDefaultApp(t *testing.T) {
	e := newTestEnv(t, App{ID: "prod", Key: "k", Secret: "real-secret"})
	status, out := demoPost(t, e.p.DemoHandler(), "/pusher/auth", url.Values{"socket_id": {"1.2"}, "channel_name": {"private-a"}})
	if status != 404 || out["auth"] != "" {
		t.Fatalf("demo without the default app: %d %v", status, out)
	}
}

// TestDemoRateLimit: the demo endpoints share one token bucket of
// DemoBurst requests refilled at DemoRequestsPerSecond; a request over it
// gets 429, a JSON error and Retry-After.
func TestDemoRateLimit(t *testing.T) {
	e := newTestEnv(t)
	h := e.p.DemoHandler()
	paths := []struct {
		path string
		form url.Values
	}{
		{"/pusher/auth", url.Values{"socket_id": {"1.2"}, "channel_name": {"private-a"}}},
		{"/pusher/user-auth", url.Values{"socket_id": {"1.2"}, "user": {"ann"}}},
		{"/pusher/publish", url.Values{"channel": {"cache-a"}, "event": {"e"}, "data": {"x"}}},
	}
	call := func(i int) *httptest.ResponseRecorder {
		p := paths[i%len(paths)]
		r := httptest.NewRequest("POST", p.path, strings.NewReader(p.form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 100 {
		if w := call(i); w.Code != 200 {
			t.Fatalf("request %d of the burst: %d %s", i+1, w.Code, w.Body)
		}
	}
	for i := range 3 {
		w := call(i)
		var out map[string]string
		if w.Code != http.StatusTooManyRequests || json.Unmarshal(w.Body.Bytes(), &out) != nil || out["error"] == "" {
			t.Fatalf("%s over the burst: %d %s, want 429 with a JSON error", paths[i].path, w.Code, w.Body)
		}
		if ra := w.Header().Get("Retry-After"); ra != "1" {
			t.Fatalf("Retry-After %q, want 1", ra)
		}
	}
	e.clock.Advance(time.Second / 50) // one more request
	if w := call(0); w.Code != 200 {
		t.Fatalf("after 20 ms: %d, want 200", w.Code)
	}
	if w := call(0); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second request after 20 ms: %d, want 429", w.Code)
	}
	e.clock.Advance(10 * time.Second) // a full burst again, not more
	for i := range 100 {
		if w := call(i); w.Code != 200 {
			t.Fatalf("request %d after a pause: %d", i+1, w.Code)
		}
	}
	if w := call(0); w.Code != http.StatusTooManyRequests {
		t.Fatalf("burst after a pause exceeded 100: %d", w.Code)
	}
}
