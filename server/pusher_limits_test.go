package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// Tests of the Pusher limits against a hostile anonymous client, over real
// sockets: each reproduces a defect found from the outside and fails
// without its fix.

// limitsMsg is a Pusher message as a client sees it; Data is the string
// value when the data is a JSON string.
type limitsMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Raw     json.RawMessage `json:"data"`
	Data    string          `json:"-"`
}

// limitsDial opens a Pusher connection to /app/{key} and returns it with
// its socket_id.
func limitsDial(t *testing.T, s *Server, key string) (*gorilla.Conn, string) {
	t.Helper()
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/"+key+"?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := limitsRead(t, c)
	var d struct {
		SocketID string `json:"socket_id"`
	}
	if m.Event != "pusher:connection_established" || json.Unmarshal([]byte(m.Data), &d) != nil || d.SocketID == "" {
		t.Fatalf("first message %+v, want connection_established", m)
	}
	return c, d.SocketID
}

// limitsRead reads one message, failing on an error or a close.
func limitsRead(t *testing.T, c *gorilla.Conn) limitsMsg {
	t.Helper()
	m, err := limitsTryRead(c, 5*time.Second)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

func limitsTryRead(c *gorilla.Conn, timeout time.Duration) (limitsMsg, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	var m limitsMsg
	_, b, err := c.ReadMessage()
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("message %.200q is not JSON: %v", b, err)
	}
	if err := json.Unmarshal(m.Raw, &m.Data); err != nil {
		m.Data = string(m.Raw)
	}
	return m, nil
}

func limitsSend(t *testing.T, c *gorilla.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(gorilla.TextMessage, b); err != nil {
		t.Fatal(err)
	}
}

// limitsSubscribe subscribes c to channel (signed when it needs it) and
// returns the replies up to and including subscription_succeeded, and the
// cache reply on cache channels.
func limitsSubscribe(t *testing.T, c *gorilla.Conn, app *pusher.App, socketID, channel string) []limitsMsg {
	t.Helper()
	d := map[string]string{"channel": channel}
	if strings.HasPrefix(channel, "private-") {
		d["auth"] = pusher.ChannelAuth(app, socketID, channel, "")
	}
	limitsSend(t, c, map[string]any{"event": "pusher:subscribe", "data": d})
	m := limitsRead(t, c)
	if m.Event != "pusher_internal:subscription_succeeded" || m.Channel != channel {
		t.Fatalf("subscribe %s: got %+v", channel, m)
	}
	out := []limitsMsg{m}
	if strings.Contains(channel, "cache-") {
		out = append(out, limitsRead(t, c))
	}
	return out
}

// limitsClient returns an HTTP client whose idle keep-alive connections
// are closed when the test ends, before the server shuts down (which
// would otherwise wait its DrainTimeout for them).
func limitsClient(t *testing.T) *http.Client {
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// limitsAPI makes a signed HTTP API call for app and returns the status
// and body.
func limitsAPI(t *testing.T, hc *http.Client, s *Server, app *pusher.App, method, path string, query url.Values, body []byte) (int, []byte) {
	t.Helper()
	if query == nil {
		query = url.Values{}
	}
	pusher.AuthorizeRequest(app, method, path, query, body, time.Now())
	req, err := http.NewRequest(method, "http://"+s.Addr().String()+path+"?"+query.Encode(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestPusherCacheIsBounded: an anonymous client (the default app's secret
// is public) publishing to ever new cache channels nobody subscribes to
// must not grow the server without bound. The cache keeps the newest
// DefaultMaxCacheChannels channels, evicting the oldest; a channel that
// gets a new event counts as new; evicted channels answer cache_miss and
// info=cache null, kept ones still replay their event.
func TestPusherCacheIsBounded(t *testing.T) {
	s := newTestServer(t, Config{})
	hc := limitsClient(t)
	app := pusher.DefaultApp()
	const limit = 1000 // pusher.DefaultMaxCacheChannels
	publish := func(from, to int) {
		t.Helper()
		for lo := from; lo < to; lo += pusher.MaxEventChannels {
			var chans []string
			for i := lo; i < min(to, lo+pusher.MaxEventChannels); i++ {
				chans = append(chans, "cache-"+strconv.Itoa(i))
			}
			body, _ := json.Marshal(map[string]any{"name": "e", "channels": chans, "data": "x"})
			if status, b := limitsAPI(t, hc, s, &app, "POST", "/apps/"+app.ID+"/events", nil, body); status != 200 {
				t.Fatalf("publish: %d %s", status, b)
			}
		}
	}
	publish(0, limit)
	publish(0, 1) // cache-0 is now the newest
	publish(limit, limit+100)

	cached := func(i int) bool {
		t.Helper()
		path := "/apps/" + app.ID + "/channels/cache-" + strconv.Itoa(i)
		status, b := limitsAPI(t, hc, s, &app, "GET", path, url.Values{"info": {"cache"}}, nil)
		var resp struct {
			Cache *struct{ Data string } `json:"cache"`
		}
		if status != 200 || json.Unmarshal(b, &resp) != nil {
			t.Fatalf("GET %s: %d %s", path, status, b)
		}
		return resp.Cache != nil
	}
	for _, tc := range []struct {
		i    int
		kept bool
	}{{0, true}, {1, false}, {100, false}, {101, true}, {limit - 1, true}, {limit + 99, true}} {
		if got := cached(tc.i); got != tc.kept {
			t.Errorf("cache-%d: cached %v, want %v (the cache holds the newest %d channels)", tc.i, got, tc.kept, limit)
		}
	}

	c, id := limitsDial(t, s, app.Key)
	if m := limitsSubscribe(t, c, &app, id, "cache-1")[1]; m.Event != "pusher:cache_miss" {
		t.Errorf("evicted cache-1: got %+v, want pusher:cache_miss", m)
	}
	if m := limitsSubscribe(t, c, &app, id, "cache-1099")[1]; m.Event != "e" || m.Data != "x" {
		t.Errorf("kept cache-1099: got %+v, want the cached event", m)
	}
}

// TestPusherCacheBytesBounded: 10 KB events to distinct cache channels
// fill the cache up to DefaultMaxCacheBytes, not further.
func TestPusherCacheBytesBounded(t *testing.T) {
	s := newTestServer(t, Config{})
	hc := limitsClient(t)
	app := pusher.DefaultApp()
	data := strings.Repeat("a", pusher.DefaultMaxEventBytes)
	const n = 900 // under the channel limit, over the byte limit
	for lo := 0; lo < n; lo += pusher.MaxEventChannels {
		var chans []string
		for i := lo; i < lo+pusher.MaxEventChannels; i++ {
			chans = append(chans, "cache-big-"+strconv.Itoa(i))
		}
		body, _ := json.Marshal(map[string]any{"name": "e", "channels": chans, "data": data})
		if status, b := limitsAPI(t, hc, s, &app, "POST", "/apps/"+app.ID+"/events", nil, body); status != 200 {
			t.Fatalf("publish: %d %s", status, b)
		}
	}
	c, id := limitsDial(t, s, app.Key)
	if m := limitsSubscribe(t, c, &app, id, "cache-big-0")[1]; m.Event != "pusher:cache_miss" {
		t.Errorf("oldest of %d 10 KB events (%d MB): got %s, want pusher:cache_miss: the cache is not bounded in bytes",
			n, n*2*len(data)>>20, m.Event)
	}
	if m := limitsSubscribe(t, c, &app, id, "cache-big-"+strconv.Itoa(n-1))[1]; m.Event != "e" || m.Data != data {
		t.Errorf("newest: got %s, want the cached event", m.Event)
	}
}

// TestPusherDemoIsRateLimited: the demo endpoints sign and publish for
// anybody, so they share one token bucket: a burst beyond it gets 429 with
// Retry-After and a JSON error, and the bucket refills.
func TestPusherDemoIsRateLimited(t *testing.T) {
	s := newTestServer(t, Config{})
	hc := limitsClient(t)
	base := "http://" + s.Addr().String()
	post := func(path string, form url.Values) *http.Response {
		t.Helper()
		resp, err := hc.PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	start := time.Now()
	var ok, limited int
	var first *http.Response
	var firstBody []byte
	for i := range 200 {
		var resp *http.Response
		switch i % 3 {
		case 0:
			resp = post("/pusher/publish", url.Values{"channel": {"cache-" + strconv.Itoa(i)}, "event": {"e"}, "data": {"x"}})
		case 1:
			resp = post("/pusher/auth", url.Values{"socket_id": {"1.2"}, "channel_name": {"private-a"}})
		default:
			resp = post("/pusher/user-auth", url.Values{"socket_id": {"1.2"}, "user": {"ann"}})
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case http.StatusTooManyRequests:
			limited++
			if first == nil {
				first, firstBody = resp, b
			}
		default:
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	elapsed := time.Since(start)
	if first == nil {
		t.Fatalf("200 demo requests in %v all succeeded: the demo endpoints are not rate limited", elapsed)
	}
	if allowed := 100 + int(50*elapsed.Seconds()) + 1; ok > allowed {
		t.Errorf("%d of 200 requests in %v succeeded, want at most %d (burst 100, 50/s)", ok, elapsed, allowed)
	}
	if ok < 100 {
		t.Errorf("only %d requests succeeded, want the burst of 100", ok)
	}
	var e struct {
		Error string `json:"error"`
	}
	if ra, err := strconv.Atoi(first.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("429 Retry-After %q, want a number of seconds", first.Header.Get("Retry-After"))
	}
	if first.Header.Get("Content-Type") != "application/json" || json.Unmarshal(firstBody, &e) != nil || e.Error == "" {
		t.Errorf("429 body %q (%s), want a JSON error", firstBody, first.Header.Get("Content-Type"))
	}
	// The bucket refills.
	testutil.CheckFor(t, 5*time.Second, func() error {
		resp := post("/pusher/auth", url.Values{"socket_id": {"1.2"}, "channel_name": {"private-a"}})
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d after waiting", resp.StatusCode)
		}
		return nil
	})
}

// TestPusherAppEventLimitAboveMaxMessage: an app's max_event_bytes decides
// what a client event may carry, even above the engine's MaxMessage: within
// it the event is relayed, over it the sender gets pusher:error and stays
// connected; only a frame beyond anything the app accepts closes with 1009.
func TestPusherAppEventLimitAboveMaxMessage(t *testing.T) {
	apps, err := pusher.NewApps(
		pusher.App{ID: "big", Key: "big-key", Secret: "big-secret", ClientEvents: true, MaxEventBytes: 102400},
		pusher.DefaultApp(),
	)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Apps: apps}) // MaxMessage: 64 KiB
	app, _ := apps.ByKey("big-key")
	const channel = "private-big"
	a, aid := limitsDial(t, s, app.Key)
	b, bid := limitsDial(t, s, app.Key)
	limitsSubscribe(t, a, app, aid, channel)
	limitsSubscribe(t, b, app, bid, channel)

	data := strings.Repeat("d", 70000)
	limitsSend(t, a, map[string]any{"event": "client-big", "channel": channel, "data": data})
	m, err := limitsTryRead(b, 5*time.Second)
	if err != nil || m.Event != "client-big" || m.Data != data {
		got, aerr := limitsTryRead(a, time.Second)
		t.Fatalf("70,000-byte client event on an app allowing 102,400: the other subscriber got %q %v; the sender got %q %v",
			m.Event, err, got.Event, aerr)
	}

	limitsSend(t, a, map[string]any{"event": "client-big", "channel": channel, "data": strings.Repeat("d", 110000)})
	m, err = limitsTryRead(a, 5*time.Second)
	if err != nil || m.Event != "pusher:error" || !strings.Contains(string(m.Raw), "102400") {
		t.Fatalf("110,000-byte client event: got %+v %v, want pusher:error naming the limit", m, err)
	}
	// Still open: a ping is answered.
	limitsSend(t, a, map[string]any{"event": "pusher:ping", "data": map[string]any{}})
	if m := limitsRead(t, a); m.Event != "pusher:pong" {
		t.Fatalf("after the refused event: got %+v, want pusher:pong", m)
	}
	if _, err := limitsTryRead(b, 200*time.Millisecond); err == nil {
		t.Fatal("the oversize event reached the other subscriber")
	}

	// Only a frame beyond anything the app could accept closes with 1009,
	// decided from the header: the default app keeps the engine's 64 KiB,
	// the big app gets App.MaxMessageBytes.
	for _, tc := range []struct {
		key  string
		size int
	}{{pusher.DefaultAppKey, 1 << 20}, {app.Key, app.MaxMessageBytes() + 1}} {
		c := rawUpgrade(t, s, "/app/"+tc.key+"?protocol=7")
		f := testutil.Frame(true, 0, opText, true, make([]byte, tc.size))
		writeBytes(t, c, f[:14]) // 2 + 8 (64-bit length) + 4 (mask): the header only
		expectClose(t, c, 1009)
	}
}
