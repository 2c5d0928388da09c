package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// Webhooks, subscription counts and watchlists against a real chatd, real
// WebSocket clients (gorilla) and a real HTTP receiver; signatures are
// also checked by the npm pusher SDK's own webhook verification.

// hookPost is one POST the receiver answered 2xx.
type hookPost struct {
	header http.Header
	body   []byte
	events []hookEvent
}

// hookEvent is one event of a webhook body, as Pusher documents it.
type hookEvent struct {
	Name              string `json:"name"`
	Channel           string `json:"channel"`
	UserID            string `json:"user_id"`
	Event             string `json:"event"`
	Data              string `json:"data"`
	SocketID          string `json:"socket_id"`
	SubscriptionCount *int   `json:"subscription_count"`
}

func (e hookEvent) String() string {
	s := e.Name + " " + e.Channel
	if e.UserID != "" {
		s += " user=" + e.UserID
	}
	if e.Event != "" {
		s += " event=" + e.Event + " data=" + e.Data + " socket=" + e.SocketID
	}
	if e.SubscriptionCount != nil {
		s += fmt.Sprintf(" count=%d", *e.SubscriptionCount)
	}
	return s
}

// hookReceiver is an HTTP server recording webhooks. Its first failFirst
// attempts are answered 503, its first slowFirst attempts not before slow
// (past the client's timeout); with block set it never answers.
type hookReceiver struct {
	t   *testing.T
	srv *httptest.Server
	URL string

	failFirst, slowFirst int64
	slow                 time.Duration
	block                chan struct{}

	attempts atomic.Int64
	mu       sync.Mutex
	posts    []hookPost
}

func newHookReceiver(t *testing.T, configure func(*hookReceiver)) *hookReceiver {
	r := &hookReceiver{t: t}
	if configure != nil {
		configure(r)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL + "/pusher/webhook"
	t.Cleanup(func() {
		if r.block != nil {
			close(r.block)
		}
		r.srv.Close()
	})
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	n := r.attempts.Add(1)
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	switch {
	case r.block != nil:
		select {
		case <-r.block:
		case <-req.Context().Done():
		}
		return
	case n <= r.slowFirst:
		select {
		case <-time.After(r.slow):
		case <-req.Context().Done():
		}
		return
	case n <= r.failFirst:
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var b struct {
		TimeMS int64       `json:"time_ms"`
		Events []hookEvent `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil || b.TimeMS == 0 || len(b.Events) == 0 {
		r.t.Errorf("webhook body %q: %v (time_ms %d, %d events)", body, err, b.TimeMS, len(b.Events))
	}
	r.mu.Lock()
	r.posts = append(r.posts, hookPost{req.Header.Clone(), body, b.Events})
	r.mu.Unlock()
}

func (r *hookReceiver) received() []hookPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.posts)
}

// events returns every event received, in the order of the POSTs.
func (r *hookReceiver) events() []hookEvent {
	var all []hookEvent
	for _, p := range r.received() {
		all = append(all, p.events...)
	}
	return all
}

// eventStrings returns the received events as sorted strings.
func (r *hookReceiver) eventStrings() []string {
	var list []string
	for _, e := range r.events() {
		list = append(list, e.String())
	}
	slices.Sort(list)
	return list
}

// waitEvents waits until the received events, sorted as strings, equal
// want (sorted too).
func (r *hookReceiver) waitEvents(t *testing.T, timeout time.Duration, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	testutil.CheckFor(t, timeout, func() error {
		if got := r.eventStrings(); !slices.Equal(got, want) {
			return fmt.Errorf("webhook events:\n  got  %q\n  want %q", got, want)
		}
		return nil
	})
}

// hookServer starts a chatd serving app alone.
func hookServer(t *testing.T, app pusher.App, cfg Config) *Server {
	t.Helper()
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Apps = apps
	return newTestServer(t, cfg)
}

func hookApp(hooks ...pusher.Webhook) pusher.App {
	return pusher.App{
		ID: "hooks", Key: "hooks-key", Secret: "hooks-secret", ClientEvents: true,
		Webhooks: hooks, WebhookBackoff: 20 * time.Millisecond, WebhookTimeout: 2 * time.Second,
	}
}

// hookSubscribe subscribes c to channel, signing private and presence
// channels (channelData is the presence member), and reads up to its
// subscription_succeeded, skipping other messages.
func hookSubscribe(t *testing.T, c *gorilla.Conn, app *pusher.App, socketID, channel, channelData string) {
	t.Helper()
	d := map[string]string{"channel": channel}
	if strings.HasPrefix(channel, "private-") || strings.HasPrefix(channel, "presence-") {
		d["auth"] = pusher.ChannelAuth(app, socketID, channel, channelData)
	}
	if channelData != "" {
		d["channel_data"] = channelData
	}
	limitsSend(t, c, map[string]any{"event": "pusher:subscribe", "data": d})
	hookReadUntil(t, c, "pusher_internal:subscription_succeeded", channel)
}

// hookReadUntil reads c until a message of event on channel, which it
// returns; other messages are skipped.
func hookReadUntil(t *testing.T, c *gorilla.Conn, event, channel string) limitsMsg {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m := limitsRead(t, c)
		if m.Event == "pusher:subscription_error" || m.Event == "pusher:error" {
			t.Fatalf("waiting for %s on %q: got %+v", event, channel, m)
		}
		if m.Event == event && m.Channel == channel {
			return m
		}
	}
	t.Fatalf("no %s on %q", event, channel)
	return limitsMsg{}
}

// readAll reads c in the background until it fails (so that the server's
// close handshake completes) and returns when the connection is gone.
func readAll(c *gorilla.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.SetReadDeadline(time.Time{})
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return done
}

// jstestDir returns node and the pusher/jstest directory, with its npm
// packages installed.
func jstestDir(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the Pusher client tests need Node.js and npm")
	}
	dir = filepath.Join("pusher", "jstest")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pusher-js")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm is not installed and pusher/jstest/node_modules is missing")
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return node, dir
}

// verifyWithPusherSDK asks the npm pusher SDK (pusher.webhook({headers,
// rawBody}).isValid()) about each POST, and about a copy of the first with
// one byte of its body changed, which it must refuse: the signature is
// what Pusher's own SDKs accept, not only what our code computes.
func verifyWithPusherSDK(t *testing.T, app pusher.App, posts []hookPost) {
	t.Helper()
	node, dir := jstestDir(t)
	type item struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	var items []item
	for _, p := range posts {
		h := map[string]string{}
		for k := range p.header {
			h[strings.ToLower(k)] = p.header.Get(k)
		}
		items = append(items, item{h, string(p.body)})
	}
	tampered := items[0]
	tampered.Body = strings.Replace(tampered.Body, `"time_ms":`, `"time_ms": `, 1)
	items = append(items, tampered)
	in, err := json.Marshal(map[string]any{"appId": app.ID, "key": app.Key, "secret": app.Secret, "webhooks": items})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "webhooks.json")
	if err := os.WriteFile(file, in, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "verify-webhooks.mjs", file)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("verify-webhooks.mjs: %v\n%s", err, out)
	}
	var results []struct {
		Valid  bool `json:"valid"`
		Events int  `json:"events"`
	}
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(items) {
		t.Fatalf("verify-webhooks.mjs said %q (%v), want %d results", out, err, len(items))
	}
	for i, p := range posts {
		if !results[i].Valid || results[i].Events != len(p.events) {
			t.Errorf("pusher SDK: webhook %d (%s) valid=%v with %d events, want valid with %d", i, p.body, results[i].Valid, results[i].Events, len(p.events))
		}
	}
	if results[len(posts)].Valid {
		t.Errorf("pusher SDK accepted a webhook whose body was changed after signing")
	}
}

// TestWebhookEveryEventType: every event type, with Pusher's fields,
// follows the protocol's transitions: two tabs of one user are one
// member_added and one member_removed; a channel is occupied and vacated
// once. Each POST carries the app key, the configured header and a
// signature both our HMAC and the npm pusher SDK accept.
func TestWebhookEveryEventType(t *testing.T) {
	rcv := newHookReceiver(t, nil)
	app := hookApp(pusher.Webhook{URL: rcv.URL, Headers: map[string]string{"X-Laravel-Route": "webhooks"}})
	app.SubscriptionCount = true
	s := hookServer(t, app, Config{})

	tab1, id1 := limitsDial(t, s, app.Key)
	tab2, id2 := limitsDial(t, s, app.Key)
	reader, id3 := limitsDial(t, s, app.Key)
	member := `{"user_id":"u1","user_info":{"name":"Una"}}`
	hookSubscribe(t, tab1, &app, id1, "presence-room", member)
	hookSubscribe(t, tab2, &app, id2, "presence-room", member)
	hookSubscribe(t, reader, &app, id3, "cache-news", "")
	limitsSend(t, tab1, map[string]any{"event": "client-hello", "channel": "presence-room", "data": map[string]int{"x": 1}})
	hookReadUntil(t, tab2, "client-hello", "presence-room")

	opened := []string{
		"channel_occupied presence-room",
		"member_added presence-room user=u1",
		"channel_occupied cache-news",
		"cache_miss cache-news",
		"subscription_count cache-news count=1",
		`client_event presence-room user=u1 event=client-hello data={"x":1} socket=` + id1,
	}
	rcv.waitEvents(t, 10*time.Second, opened)

	tab2.Close()
	tab1.Close()
	reader.Close()
	rcv.waitEvents(t, 10*time.Second, append(opened[:len(opened):len(opened)],
		"member_removed presence-room user=u1",
		"channel_vacated presence-room",
		"channel_vacated cache-news",
	))

	posts := rcv.received()
	for _, p := range posts {
		mac := hmac.New(sha256.New, []byte(app.Secret))
		mac.Write(p.body)
		if got, want := p.header.Get("X-Pusher-Signature"), hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Errorf("X-Pusher-Signature %q, want %q", got, want)
		}
		if p.header.Get("X-Pusher-Key") != app.Key || p.header.Get("Content-Type") != "application/json" ||
			p.header.Get("X-Laravel-Route") != "webhooks" {
			t.Errorf("webhook headers %v", p.header)
		}
	}
	verifyWithPusherSDK(t, app, posts)
	// The sender counts a POST once it has read the answer, just after
	// the receiver recorded it.
	testutil.CheckFor(t, 5*time.Second, func() error {
		if st := s.pusher.Stats(); st.WebhookPosts != uint64(len(posts)) || st.WebhookEventsSent != 9 || st.WebhookEventsDropped != 0 {
			return fmt.Errorf("stats %+v after %d posts of 9 events", st, len(posts))
		}
		return nil
	})
}

// TestWebhookBatchingAndFilters: events within the batch window go in
// one POST; a webhook's event_types and channel filter remove what they
// do not select from what it is sent.
func TestWebhookBatchingAndFilters(t *testing.T) {
	all := newHookReceiver(t, nil)
	some := newHookReceiver(t, nil)
	app := hookApp(
		pusher.Webhook{URL: all.URL},
		pusher.Webhook{URL: some.URL, EventTypes: []string{pusher.WebhookChannelOccupied},
			Filter: pusher.WebhookFilter{ChannelNameStartsWith: "private-", ChannelNameEndsWith: "-x"}},
	)
	app.WebhookBatch = time.Second
	s := hookServer(t, app, Config{})

	c, id := limitsDial(t, s, app.Key)
	channels := []string{"private-a-x", "private-b-y", "public-x", "private-c-x"}
	for _, ch := range channels {
		d := map[string]string{"channel": ch}
		if strings.HasPrefix(ch, "private-") {
			d["auth"] = pusher.ChannelAuth(&app, id, ch, "")
		}
		limitsSend(t, c, map[string]any{"event": "pusher:subscribe", "data": d})
	}
	for _, ch := range channels {
		hookReadUntil(t, c, "pusher_internal:subscription_succeeded", ch)
	}
	var occupied []string
	for _, ch := range channels {
		occupied = append(occupied, "channel_occupied "+ch)
	}
	all.waitEvents(t, 10*time.Second, occupied)
	if posts := all.received(); len(posts) != 1 {
		t.Errorf("4 subscriptions within the 1 s window came in %d POSTs, want 1", len(posts))
	}

	c.Close()
	var vacated []string
	for _, ch := range channels {
		vacated = append(vacated, "channel_vacated "+ch)
	}
	all.waitEvents(t, 10*time.Second, append(occupied, vacated...))
	// Shutdown sends whatever is still queued, so what "some" has now is
	// all it will ever get.
	s.Shutdown(context.Background())
	if got, want := some.eventStrings(), []string{"channel_occupied private-a-x", "channel_occupied private-c-x"}; !slices.Equal(got, want) {
		t.Errorf("filtered webhook got %q, want %q", got, want)
	}
}

// TestWebhookRetriedUntilDelivered: a receiver that answers 503, times
// out or refuses connections the first times still gets every event,
// each batch at least once, once it recovers; retries are counted and
// nothing is dropped.
func TestWebhookRetriedUntilDelivered(t *testing.T) {
	refused := func(t *testing.T) (string, func(http.Handler)) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/hook", func(h http.Handler) {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listen again on %s: %v", addr, err)
			}
			srv := &http.Server{Handler: h}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		}
	}
	cases := []struct {
		name      string
		configure func(*hookReceiver)
		refuse    bool
	}{
		{"503 three times", func(r *hookReceiver) { r.failFirst = 3 }, false},
		{"timeouts twice", func(r *hookReceiver) { r.slowFirst, r.slow = 2, 3*time.Second }, false},
		{"connection refused", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newHookReceiver(t, tc.configure)
			url := rcv.URL
			var listen func(http.Handler)
			if tc.refuse {
				url, listen = refused(t)
			}
			app := hookApp(pusher.Webhook{URL: url, EventTypes: []string{pusher.WebhookChannelOccupied}})
			app.WebhookTimeout = 200 * time.Millisecond
			app.WebhookBackoff = 50 * time.Millisecond
			s := hookServer(t, app, Config{})
			c, id := limitsDial(t, s, app.Key)
			var want []string
			for i := range 20 {
				ch := fmt.Sprintf("retry-%d", i)
				hookSubscribe(t, c, &app, id, ch, "")
				want = append(want, "channel_occupied "+ch)
			}
			if tc.refuse {
				testutil.CheckFor(t, 10*time.Second, func() error {
					if s.pusher.Stats().WebhookRetries < 2 {
						return fmt.Errorf("not retried twice yet")
					}
					return nil
				})
				listen(rcv.srv.Config.Handler)
			}
			rcv.waitEvents(t, 20*time.Second, want)
			testutil.CheckFor(t, 5*time.Second, func() error {
				if st := s.pusher.Stats(); st.WebhookRetries < 2 || st.WebhookEventsDropped != 0 || st.WebhookEventsSent != 20 {
					return fmt.Errorf("stats %+v: want at least 2 retries, nothing dropped, 20 sent", st)
				}
				return nil
			})
		})
	}
}

// TestWebhookReceiverNeverAnswers: against an endpoint that never
// answers, the queue stays within its bounds, what does not fit is counted
// as overflow, batches are dropped and counted after WebhookRetryFor, and
// the connections making the events are served as usual throughout.
func TestWebhookReceiverNeverAnswers(t *testing.T) {
	rcv := newHookReceiver(t, func(r *hookReceiver) { r.block = make(chan struct{}) })
	app := hookApp(pusher.Webhook{URL: rcv.URL})
	app.WebhookTimeout = 50 * time.Millisecond
	app.WebhookBackoff = 10 * time.Millisecond
	app.WebhookRetryFor = 300 * time.Millisecond
	app.WebhookQueueEvents = 20
	s := hookServer(t, app, Config{DrainTimeout: 500 * time.Millisecond, AdminAddr: "127.0.0.1:0"})

	c, id := limitsDial(t, s, app.Key)
	const cycles = 300
	maxQueued := 0
	for i := range cycles {
		ch := fmt.Sprintf("void-%d", i)
		hookSubscribe(t, c, &app, id, ch, "")
		limitsSend(t, c, map[string]any{"event": "pusher:unsubscribe", "data": map[string]string{"channel": ch}})
		maxQueued = max(maxQueued, s.pusher.Stats().WebhookQueued)
	}
	// Still served: a ping is answered at once.
	limitsSend(t, c, map[string]any{"event": "pusher:ping", "data": map[string]string{}})
	if m := limitsRead(t, c); m.Event != "pusher:pong" {
		t.Fatalf("got %+v, want pusher:pong", m)
	}
	if maxQueued > app.WebhookQueueEvents {
		t.Errorf("queue held %d events, over its limit of %d", maxQueued, app.WebhookQueueEvents)
	}
	testutil.CheckFor(t, 20*time.Second, func() error {
		st := s.pusher.Stats()
		if st.WebhookEventsDropped+st.WebhookQueueOverflow != 2*cycles || st.WebhookQueued != 0 {
			return fmt.Errorf("stats %+v: want dropped + overflow = %d, none queued", st, 2*cycles)
		}
		return nil
	})
	st := s.pusher.Stats()
	if st.WebhookQueueOverflow == 0 || st.WebhookEventsDropped == 0 || st.WebhookEventsSent != 0 || st.WebhookRetries == 0 {
		t.Errorf("stats %+v: want overflow, drops and retries, nothing sent", st)
	}
	if rcv.attempts.Load() == 0 {
		t.Error("the receiver was never tried")
	}
	_, metrics := adminGet(t, s, "/metrics")
	for _, name := range []string{"chatd_pusher_webhook_events_dropped_total", "chatd_pusher_webhook_queue_overflow_total", "chatd_pusher_webhook_retries_total"} {
		if !strings.Contains(metrics, name+" ") || strings.Contains(metrics, name+" 0\n") {
			t.Errorf("/metrics has no non-zero %s", name)
		}
	}
}

// TestWebhookShutdownDeliversPending: on shutdown the events still queued
// or being retried go out, the channel_vacated of the connections the
// shutdown closed included; against an endpoint that never answers,
// shutdown still ends within its bound and counts the loss.
func TestWebhookShutdownDeliversPending(t *testing.T) {
	t.Run("receiver recovers", func(t *testing.T) {
		rcv := newHookReceiver(t, func(r *hookReceiver) { r.failFirst = 2 })
		app := hookApp(pusher.Webhook{URL: rcv.URL})
		app.WebhookBackoff = 100 * time.Millisecond
		app.WebhookBatch = time.Hour // only the shutdown sends them
		s := hookServer(t, app, Config{DrainTimeout: 5 * time.Second})
		c, id := limitsDial(t, s, app.Key)
		var want []string
		for i := range 5 {
			ch := fmt.Sprintf("pending-%d", i)
			hookSubscribe(t, c, &app, id, ch, "")
			want = append(want, "channel_occupied "+ch, "channel_vacated "+ch)
		}
		gone := readAll(c)
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-gone
		if got := rcv.eventStrings(); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("after shutdown the receiver has %q, want %q", got, want)
		}
		if st := s.pusher.Stats(); st.WebhookEventsDropped != 0 || st.WebhookRetries < 2 {
			t.Errorf("stats %+v: want 2 retries or more, nothing dropped", st)
		}
	})
	t.Run("receiver never answers", func(t *testing.T) {
		rcv := newHookReceiver(t, func(r *hookReceiver) { r.block = make(chan struct{}) })
		app := hookApp(pusher.Webhook{URL: rcv.URL})
		app.WebhookTimeout = time.Minute
		const drain = 500 * time.Millisecond
		s := hookServer(t, app, Config{DrainTimeout: drain})
		c, id := limitsDial(t, s, app.Key)
		for i := range 5 {
			hookSubscribe(t, c, &app, id, fmt.Sprintf("lost-%d", i), "")
		}
		testutil.CheckFor(t, 10*time.Second, func() error {
			if rcv.attempts.Load() == 0 {
				return fmt.Errorf("no POST yet")
			}
			return nil
		})
		gone := readAll(c)
		start := time.Now()
		s.Shutdown(context.Background())
		<-gone
		// The connections' drain, then the webhooks' own drain timeout:
		// generous bounds, as the machine is shared.
		if el := time.Since(start); el > 10*drain+5*time.Second {
			t.Errorf("shutdown took %v with an endpoint that never answers", el)
		}
		if st := s.pusher.Stats(); st.WebhookEventsDropped != 10 || st.WebhookQueued != 0 || st.WebhookEventsSent != 0 {
			t.Errorf("stats %+v: want the 10 events dropped", st)
		}
	})
}

// TestSubscriptionCount: with the app's subscription_count on, the
// subscribers of a channel receive pusher_internal:subscription_count as
// the count changes, coalesced to at most about one a second, and the
// subscription_count webhook gets the counts too; presence channels get
// neither.
func TestSubscriptionCount(t *testing.T) {
	rcv := newHookReceiver(t, nil)
	app := hookApp(pusher.Webhook{URL: rcv.URL, EventTypes: []string{pusher.WebhookSubscriptionCount}})
	app.SubscriptionCount = true
	s := hookServer(t, app, Config{})

	start := time.Now()
	first, id := limitsDial(t, s, app.Key)
	hookSubscribe(t, first, &app, id, "counted", "")
	const subscribers = 10
	for range subscribers - 1 {
		c, id := limitsDial(t, s, app.Key)
		hookSubscribe(t, c, &app, id, "counted", "")
		go readAll(c)
	}
	member, mid := limitsDial(t, s, app.Key)
	hookSubscribe(t, member, &app, mid, "presence-lobby", `{"user_id":"m"}`)

	counts := 0
	for {
		m := hookReadUntil(t, first, "pusher_internal:subscription_count", "counted")
		counts++
		var d struct {
			N int `json:"subscription_count"`
		}
		if err := json.Unmarshal([]byte(m.Data), &d); err != nil {
			t.Fatalf("subscription_count data %q: %v", m.Data, err)
		}
		if d.N == subscribers {
			break
		}
		if d.N < 1 || d.N > subscribers {
			t.Fatalf("subscription_count %d", d.N)
		}
	}
	if limit := int(time.Since(start)/time.Second) + 2; counts > limit {
		t.Errorf("%d subscription_count messages in %v: not coalesced to one a second", counts, time.Since(start))
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		ev := rcv.events()
		if len(ev) == 0 || *ev[len(ev)-1].SubscriptionCount != subscribers {
			return fmt.Errorf("webhook subscription counts %v, want the last %d", ev, subscribers)
		}
		return nil
	})
	s.Shutdown(context.Background())
	for _, e := range rcv.events() {
		if e.Channel != "counted" || e.Name != pusher.WebhookSubscriptionCount {
			t.Errorf("unexpected webhook event %v", e)
		}
	}
	for {
		m, err := limitsTryRead(member, time.Second)
		if err != nil {
			break
		}
		if m.Event == "pusher_internal:subscription_count" {
			t.Errorf("a presence channel got %+v", m)
		}
	}
}

// watchSignin signs c in as user id with user_data holding the watchlist.
func watchSignin(t *testing.T, c *gorilla.Conn, app *pusher.App, socketID, id string, watchlist []string) {
	t.Helper()
	ud, _ := json.Marshal(map[string]any{"id": id, "watchlist": watchlist})
	limitsSend(t, c, map[string]any{"event": "pusher:signin", "data": map[string]string{
		"auth": pusher.UserAuth(app, socketID, string(ud)), "user_data": string(ud)}})
	hookReadUntil(t, c, "pusher:signin_success", "")
}

// watchEvents reads the next watchlist_events of c as "name:id,id ..."
// strings.
func watchEvents(t *testing.T, c *gorilla.Conn) []string {
	t.Helper()
	m := hookReadUntil(t, c, "pusher_internal:watchlist_events", "")
	var d struct {
		Events []struct {
			Name    string   `json:"name"`
			UserIDs []string `json:"user_ids"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(m.Data), &d); err != nil {
		t.Fatalf("watchlist_events data %q: %v", m.Data, err)
	}
	var out []string
	for _, e := range d.Events {
		out = append(out, e.Name+":"+strings.Join(e.UserIDs, ","))
	}
	return out
}

// TestWatchlist: a signed-in user whose user_data has a watchlist learns
// the state of those users right after signing in, then online when one
// signs in (its first connection: a second tab says nothing) and offline
// when its last connection is gone.
func TestWatchlist(t *testing.T) {
	app := hookApp()
	s := hookServer(t, app, Config{})

	a, aid := limitsDial(t, s, app.Key)
	watchSignin(t, a, &app, aid, "a", nil)
	w, wid := limitsDial(t, s, app.Key)
	watchSignin(t, w, &app, wid, "w", []string{"a", "b"})
	if got := watchEvents(t, w); !slices.Equal(got, []string{"online:a", "offline:b"}) {
		t.Fatalf("state after signin %q, want online:a offline:b", got)
	}

	b1, b1id := limitsDial(t, s, app.Key)
	watchSignin(t, b1, &app, b1id, "b", nil)
	if got := watchEvents(t, w); !slices.Equal(got, []string{"online:b"}) {
		t.Fatalf("b signed in: %q", got)
	}
	b2, b2id := limitsDial(t, s, app.Key)
	watchSignin(t, b2, &app, b2id, "b", nil)
	// One at a time, each close seen by the server before the next: then
	// each of these is the next watchlist event, and a second tab's
	// sign-in or the first tab's close would show up in its place.
	b1.Close()
	waitConns(t, s, 3)
	b2.Close()
	waitConns(t, s, 2)
	a.Close()
	if got := watchEvents(t, w); !slices.Equal(got, []string{"offline:b"}) {
		t.Fatalf("b's tabs closed: %q, want offline:b", got)
	}
	if got := watchEvents(t, w); !slices.Equal(got, []string{"offline:a"}) {
		t.Fatalf("a closed: %q, want offline:a", got)
	}

	// A watchlist that is not a list of user IDs is refused.
	x, xid := limitsDial(t, s, app.Key)
	ud := `{"id":"x","watchlist":"a"}`
	limitsSend(t, x, map[string]any{"event": "pusher:signin", "data": map[string]string{
		"auth": pusher.UserAuth(&app, xid, ud), "user_data": ud}})
	if m := limitsRead(t, x); m.Event != "pusher:error" || !strings.Contains(string(m.Raw), "watchlist") {
		t.Fatalf("signin with a bad watchlist: %+v", m)
	}
}
