package pusher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apiCall is one signed HTTP API request.
type apiCall struct {
	method, path string
	params       url.Values // extra query parameters, signed
	body         []byte
	// mutate changes the signed query before sending (tests of bad requests).
	mutate func(q url.Values)
	now    time.Time // signing time; zero means the env clock
}

// do signs and serves c, returning the status and decoded JSON body.
func (e *testEnv) do(t *testing.T, c apiCall) (int, map[string]any) {
	t.Helper()
	q := url.Values{}
	for k, v := range c.params {
		q[k] = v
	}
	now := c.now
	if now.IsZero() {
		now = e.clock.Now()
	}
	AuthorizeRequest(e.app, c.method, c.path, q, c.body, now)
	if c.mutate != nil {
		c.mutate(q)
	}
	r := httptest.NewRequest(c.method, c.path+"?"+q.Encode(), bytes.NewReader(c.body))
	w := httptest.NewRecorder()
	e.p.APIHandler().ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json", c.method, c.path, ct)
	}
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", c.method, c.path, w.Body, err)
	}
	if w.Code != http.StatusOK && out["error"] == "" {
		t.Fatalf("%s %s: status %d without an error message", c.method, c.path, w.Code)
	}
	return w.Code, out
}

func eventsBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAPIDocsWorkedExample(t *testing.T) {
	// The HTTP API reference's request, verbatim, at its own timestamp.
	e := newTestEnv(t, App{ID: "3", Key: "278d425bdf160c739803", Secret: "7ad3773142a6692b25b8"})
	e.clock.now = time.Unix(1353088179, 0)
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "project-3", "")
	body := `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	target := "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0" +
		"&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	w := httptest.NewRecorder()
	e.p.APIHandler().ServeHTTP(w, httptest.NewRequest("POST", target, strings.NewReader(body)))
	if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "{}" {
		t.Fatalf("status %d body %s, want 200 {}", w.Code, w.Body)
	}
	m := c.takeOne(t)
	if m.Event != "foo" || m.Channel != "project-3" || m.str() != `{"some":"data"}` {
		t.Fatalf("subscriber got %+v", m)
	}
}

func TestAPIAuthentication(t *testing.T) {
	e := newTestEnv(t)
	body := eventsBody(t, map[string]any{"name": "e", "channel": "c", "data": "{}"})
	path := "/apps/" + e.app.ID + "/events"
	now := e.clock.Now()
	tests := []struct {
		name   string
		call   apiCall
		status int
		errHas string
	}{
		{"good", apiCall{method: "POST", path: path, body: body}, 200, ""},
		{"good GET", apiCall{method: "GET", path: "/apps/chatd/channels"}, 200, ""},
		{"bad signature", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("auth_signature", strings.Repeat("0", 64))
		}}, 401, "auth_signature"},
		{"signature of another path", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("auth_signature", SignRequest(e.app.Secret, "POST", "/apps/chatd/batch_events", q))
		}}, 401, "auth_signature"},
		{"unsigned extra parameter", apiCall{method: "GET", path: "/apps/chatd/channels", mutate: func(q url.Values) {
			q.Set("filter_by_prefix", "presence-")
		}}, 401, "auth_signature"},
		{"missing signature", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Del("auth_signature")
		}}, 401, "auth_signature"},
		{"wrong key", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("auth_key", "other")
		}}, 401, "auth_key"},
		{"wrong version", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("auth_version", "2.0")
			q.Set("auth_signature", SignRequest(e.app.Secret, "POST", path, q))
		}}, 401, "auth_version"},
		{"timestamp 599 s old", apiCall{method: "POST", path: path, body: body, now: now.Add(-599 * time.Second)}, 200, ""},
		{"timestamp 599 s ahead", apiCall{method: "POST", path: path, body: body, now: now.Add(599 * time.Second)}, 200, ""},
		{"timestamp 601 s old", apiCall{method: "POST", path: path, body: body, now: now.Add(-601 * time.Second)}, 401, "auth_timestamp"},
		{"timestamp 601 s ahead", apiCall{method: "POST", path: path, body: body, now: now.Add(601 * time.Second)}, 401, "auth_timestamp"},
		{"timestamp not a number", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("auth_timestamp", "soon")
			q.Set("auth_signature", SignRequest(e.app.Secret, "POST", path, q))
		}}, 401, "auth_timestamp"},
		{"body_md5 of another body", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Set("body_md5", BodyMD5([]byte("other")))
			q.Set("auth_signature", SignRequest(e.app.Secret, "POST", path, q))
		}}, 401, "body_md5"},
		{"body_md5 missing", apiCall{method: "POST", path: path, body: body, mutate: func(q url.Values) {
			q.Del("body_md5")
			q.Set("auth_signature", SignRequest(e.app.Secret, "POST", path, q))
		}}, 401, "body_md5"},
		{"unknown app", apiCall{method: "POST", path: "/apps/nope/events", body: body}, 404, "app_id"},
		{"unknown path", apiCall{method: "GET", path: "/apps/chatd/nothing"}, 404, "no such"},
		{"wrong method", apiCall{method: "GET", path: path}, 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.do(t, tt.call)
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, out, tt.status)
			}
			if tt.errHas != "" && !strings.Contains(fmt.Sprint(out["error"]), tt.errHas) {
				t.Fatalf("error %q does not mention %q", out["error"], tt.errHas)
			}
		})
	}
}

func TestAPIEvents(t *testing.T) {
	e := newTestEnv(t)
	path := "/apps/chatd/events"
	a, ca := e.connect(t)
	b, cb := e.connect(t)
	for _, ch := range []string{"news", "sport"} {
		e.mustSubscribe(t, a, ca, ch, "")
		e.mustSubscribe(t, b, cb, ch, "")
	}
	e.mustSubscribe(t, a, ca, "presence-p", `{"user_id":"a"}`)
	e.mustSubscribe(t, b, cb, "presence-p", `{"user_id":"b"}`)
	ca.take(t)

	// Two channels, the first subscriber excluded by socket_id.
	before := e.rooms.published
	status, out := e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{
		"name": "headline", "channels": []string{"news", "sport"}, "data": `{"t":"hi"}`, "socket_id": a.SocketID(),
	})})
	if status != 200 || len(out) != 0 {
		t.Fatalf("status %d %v", status, out)
	}
	if e.rooms.published-before != 2 {
		t.Fatalf("%d rooms publishes, want one per channel", e.rooms.published-before)
	}
	ca.expectNone(t)
	got := cb.take(t)
	if len(got) != 2 || got[0].Event != "headline" || got[0].str() != `{"t":"hi"}` {
		t.Fatalf("b got %+v", got)
	}

	// Data that is not a string is delivered as its JSON text.
	e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{"name": "o", "channel": "news", "data": map[string]int{"n": 1}})})
	if m := cb.takeOne(t); m.str() != `{"n":1}` {
		t.Fatalf("got %+v", m)
	}

	// info attributes.
	status, out = e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{
		"name": "x", "channels": []string{"presence-p", "news"}, "data": "1", "info": "user_count,subscription_count",
	})})
	want := `{"channels":{"news":{"subscription_count":2},"presence-p":{"subscription_count":2,"user_count":2}}}`
	if gotJSON, _ := json.Marshal(out); status != 200 || string(gotJSON) != want {
		t.Fatalf("info response %d %s, want %s", status, gotJSON, want)
	}

	// Parameters in the query string instead of the body.
	status, _ = e.do(t, apiCall{method: "POST", path: path, params: url.Values{"name": {"q"}, "channel": {"news"}, "data": {"d"}}})
	if status != 200 {
		t.Fatalf("query-string event: status %d", status)
	}
	if m := cb.take(t); len(m) == 0 || m[len(m)-1].Event != "q" {
		t.Fatalf("query-string event not delivered: %+v", m)
	}

	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprint("c", i)
	}
	bad := []struct {
		name   string
		body   any
		status int
	}{
		{"no name", map[string]any{"channel": "news", "data": "x"}, 400},
		{"no data", map[string]any{"name": "n", "channel": "news"}, 400},
		{"no channel", map[string]any{"name": "n", "data": "x"}, 400},
		{"channel and channels", map[string]any{"name": "n", "channel": "a", "channels": []string{"b"}, "data": "x"}, 400},
		{"101 channels", map[string]any{"name": "n", "channels": many, "data": "x"}, 400},
		{"invalid channel", map[string]any{"name": "n", "channel": "a b", "data": "x"}, 400},
		{"invalid socket_id", map[string]any{"name": "n", "channel": "a", "data": "x", "socket_id": "abc"}, 400},
		{"reserved name", map[string]any{"name": "pusher_internal:member_added", "channel": "a", "data": "x"}, 400},
		{"name too long", map[string]any{"name": strings.Repeat("n", 201), "channel": "a", "data": "x"}, 400},
		{"unknown info", map[string]any{"name": "n", "channel": "a", "data": "x", "info": "colour"}, 400},
		{"data over 10 KB", map[string]any{"name": "n", "channel": "a", "data": strings.Repeat("x", 10241)}, 413},
		{"not JSON", "{", 400},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if s, ok := tt.body.(string); ok {
				body = []byte(s)
			} else {
				body = eventsBody(t, tt.body)
			}
			if status, out := e.do(t, apiCall{method: "POST", path: path, body: body}); status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, out, tt.status)
			}
		})
	}
	// 100 channels and 10 KB of data are fine.
	if status, out := e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{
		"name": "n", "channels": many[:100], "data": strings.Repeat("x", 10240)})}); status != 200 {
		t.Fatalf("limits exactly: status %d %v", status, out)
	}
	cb.take(t)
}

func TestAPIRequestTooLarge(t *testing.T) {
	e := newTestEnv(t)
	body := bytes.Repeat([]byte(" "), int(maxBody(e.app))+1)
	if status, _ := e.do(t, apiCall{method: "POST", path: "/apps/chatd/events", body: body}); status != 413 {
		t.Fatalf("status %d, want 413", status)
	}
}

func TestAPIBatchEvents(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "a", "")
	batch := func(n int) []map[string]any {
		b := make([]map[string]any, n)
		for i := range b {
			b[i] = map[string]any{"name": fmt.Sprint("e", i), "channel": "a", "data": strconv.Itoa(i)}
		}
		return b
	}
	path := "/apps/chatd/batch_events"
	if status, out := e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{"batch": batch(10)})}); status != 200 || len(out) != 0 {
		t.Fatalf("batch of 10: %d %v", status, out)
	}
	if got := c.take(t); len(got) != 10 || got[9].Event != "e9" {
		t.Fatalf("got %d events", len(got))
	}
	b := batch(2)
	b[1]["info"] = "subscription_count"
	status, out := e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, map[string]any{"batch": b})})
	if gotJSON, _ := json.Marshal(out); status != 200 || string(gotJSON) != `{"batch":[{},{"subscription_count":1}]}` {
		t.Fatalf("batch info: %d %s", status, gotJSON)
	}
	c.take(t)

	invalid := batch(3)
	invalid[2]["channel"] = "bad channel"
	for name, body := range map[string]any{
		"11 events":       map[string]any{"batch": batch(11)},
		"empty":           map[string]any{"batch": []any{}},
		"channels list":   map[string]any{"batch": []any{map[string]any{"name": "n", "channels": []string{"a"}, "data": "x"}}},
		"one invalid":     map[string]any{"batch": invalid},
		"not a batch obj": []any{},
	} {
		if status, out := e.do(t, apiCall{method: "POST", path: path, body: eventsBody(t, body)}); status != 400 {
			t.Errorf("%s: status %d %v, want 400", name, status, out)
		}
	}
	c.expectNone(t) // a batch with an invalid event publishes nothing
}

func TestAPIChannelQueries(t *testing.T) {
	e := newTestEnv(t)
	s1, c1 := e.connect(t)
	s2, c2 := e.connect(t)
	s3, c3 := e.connect(t)
	e.mustSubscribe(t, s1, c1, "news", "")
	e.mustSubscribe(t, s2, c2, "news", "")
	e.mustSubscribe(t, s1, c1, "presence-room", `{"user_id":"u1"}`)
	e.mustSubscribe(t, s2, c2, "presence-room", `{"user_id":"u2"}`)
	e.mustSubscribe(t, s3, c3, "presence-room", `{"user_id":"u1"}`)
	e.mustSubscribe(t, s3, c3, "cache-c", "")
	e.p.publishEvent(e.p.states["chatd"], event{name: "v", data: "42", channels: []string{"cache-c"}})

	tests := []struct {
		name   string
		path   string
		params url.Values
		status int
		want   string
	}{
		{"all channels", "/apps/chatd/channels", nil, 200,
			`{"channels":{"cache-c":{},"news":{},"presence-room":{}}}`},
		{"by prefix with user_count", "/apps/chatd/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, 200,
			`{"channels":{"presence-room":{"user_count":2}}}`},
		{"subscription_count", "/apps/chatd/channels", url.Values{"filter_by_prefix": {"n"}, "info": {"subscription_count"}}, 200,
			`{"channels":{"news":{"subscription_count":2}}}`},
		{"user_count without presence prefix", "/apps/chatd/channels", url.Values{"info": {"user_count"}}, 400, ""},
		{"presence channel", "/apps/chatd/channels/presence-room", url.Values{"info": {"user_count,subscription_count"}}, 200,
			`{"occupied":true,"subscription_count":3,"user_count":2}`},
		{"public channel", "/apps/chatd/channels/news", url.Values{"info": {"subscription_count"}}, 200,
			`{"occupied":true,"subscription_count":2}`},
		{"cache attribute", "/apps/chatd/channels/cache-c", url.Values{"info": {"cache"}}, 200,
			`{"cache":{"data":"42","ttl":1800},"occupied":true}`},
		{"cache on a non-cache channel", "/apps/chatd/channels/news", url.Values{"info": {"cache"}}, 400, ""},
		{"empty channel", "/apps/chatd/channels/nobody", nil, 200, `{"occupied":false}`},
		{"user_count of a public channel", "/apps/chatd/channels/news", url.Values{"info": {"user_count"}}, 400, ""},
		{"invalid channel name", "/apps/chatd/channels/a:b", nil, 400, ""},
		{"users", "/apps/chatd/channels/presence-room/users", nil, 200, `{"users":[{"id":"u1"},{"id":"u2"}]}`},
		{"users of a public channel", "/apps/chatd/channels/news/users", nil, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.do(t, apiCall{method: "GET", path: tt.path, params: tt.params})
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, out, tt.status)
			}
			if tt.want != "" {
				if got, _ := json.Marshal(out); string(got) != tt.want {
					t.Fatalf("got %s, want %s", got, tt.want)
				}
			}
		})
	}
}

func TestAPITerminateConnections(t *testing.T) {
	e := newTestEnv(t)
	signin := func(id string) (*Session, *fakeConn) {
		s, c := e.connect(t)
		ud := fmt.Sprintf(`{"id":%q}`, id)
		send(t, s, "pusher:signin", "", map[string]string{"auth": UserAuth(e.app, s.SocketID(), ud), "user_data": ud})
		if m := c.takeOne(t); m.Event != "pusher:signin_success" {
			t.Fatalf("signin: %+v", m)
		}
		return s, c
	}
	_, tab1 := signin("u1")
	_, tab2 := signin("u1")
	_, other := signin("u2")
	status, _ := e.do(t, apiCall{method: "POST", path: "/apps/chatd/users/u1/terminate_connections", body: []byte("{}")})
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	for _, c := range []*fakeConn{tab1, tab2} {
		if c.closeCode() != CodeUnauthorized {
			t.Fatalf("connection closed with %d, want %d", c.closeCode(), CodeUnauthorized)
		}
	}
	if other.closeCode() != 0 {
		t.Fatal("another user's connection was closed")
	}
}

func TestAPIThroughRealServer(t *testing.T) {
	// The handler behind a real HTTP server, as the engine mounts it.
	e := newTestEnv(t)
	e.clock.now = time.Now()
	mux := http.NewServeMux()
	mux.Handle("/apps/", e.p.APIHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "news", "")
	body := []byte(`{"name":"n","channel":"news","data":"hello"}`)
	q := url.Values{}
	AuthorizeRequest(e.app, "POST", "/apps/chatd/events", q, body, time.Now())
	resp, err := http.Post(srv.URL+"/apps/chatd/events?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, got)
	}
	if m := c.takeOne(t); m.str() != "hello" {
		t.Fatalf("got %+v", m)
	}
}
