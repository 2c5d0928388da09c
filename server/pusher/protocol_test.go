package pusher

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name  string
		key   string
		query url.Values
		code  int // 0: accepted
	}{
		{"ok", DefaultAppKey, url.Values{"protocol": {"7"}, "client": {"js"}, "version": {"8.4.0"}}, 0},
		{"protocol 5", DefaultAppKey, url.Values{"protocol": {"5"}}, 0},
		{"unknown key", "nope", url.Values{"protocol": {"7"}}, CodeAppNotFound},
		{"no protocol", DefaultAppKey, url.Values{}, CodeNoProtocol},
		{"protocol not a number", DefaultAppKey, url.Values{"protocol": {"seven"}}, CodeInvalidVersion},
		{"protocol too old", DefaultAppKey, url.Values{"protocol": {"4"}}, CodeUnsupportedProtocol},
		{"protocol too new", DefaultAppKey, url.Values{"protocol": {"8"}}, CodeUnsupportedProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeConn{}
			s := e.p.Open(c, tt.key, tt.query)
			m := c.takeOne(t)
			if tt.code != 0 {
				if s != nil {
					t.Fatal("Open accepted, want refused")
				}
				var d struct {
					Code    int
					Message string
				}
				m.decode(t, &d)
				if m.Event != "pusher:error" || d.Code != tt.code || c.closeCode() != tt.code {
					t.Fatalf("got %s %+v, close %d; want pusher:error and close %d", m.Event, d, c.closeCode(), tt.code)
				}
				_, err := e.p.Check(tt.key, tt.query)
				var ce *RefusedError
				if !errors.As(err, &ce) || ce.Code != tt.code {
					t.Fatalf("Check = %v, want close %d", err, tt.code)
				}
				return
			}
			if s == nil {
				t.Fatalf("Open refused with %d", c.closeCode())
			}
			if m.Event != "pusher:connection_established" || m.Data[0] != '"' {
				t.Fatalf("got %+v, want connection_established with string data", m)
			}
			var d struct {
				SocketID        string `json:"socket_id"`
				ActivityTimeout int    `json:"activity_timeout"`
			}
			m.decode(t, &d)
			if d.SocketID != s.SocketID() || !validSocketID(d.SocketID) || d.ActivityTimeout != 120 {
				t.Fatalf("data %+v (session %s), want a socket ID N.M and activity_timeout 120", d, s.SocketID())
			}
			if s.ActivityTimeout() != 120*time.Second {
				t.Fatalf("ActivityTimeout = %v", s.ActivityTimeout())
			}
			s.Closed()
		})
	}
}

func TestSocketIDsAreUniqueAndValid(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		id := newSocketID()
		if !validSocketID(id) || seen[id] {
			t.Fatalf("socket ID %q invalid or repeated", id)
		}
		seen[id] = true
	}
}

func TestPingPong(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	send(t, s, "pusher:ping", "", map[string]any{})
	if m := c.takeOne(t); m.Event != "pusher:pong" {
		t.Fatalf("got %+v, want pusher:pong", m)
	}
	send(t, s, "pusher:pong", "", map[string]any{})
	c.expectNone(t)
	s.Ping()
	if m := c.takeOne(t); m.Event != "pusher:ping" {
		t.Fatalf("got %+v, want pusher:ping", m)
	}
}

func TestInvalidMessages(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	for _, msg := range []string{
		``, `not json`, `[]`, `"str"`, `{}`, `{"event":""}`, `{"event":5}`,
		`{"event":"pusher:subscribe","data":5}`,
		`{"event":"pusher:subscribe","data":"not json"}`,
		`{"event":"pusher:unknown"}`,
		`{"event":"my-event","channel":"private-a","data":"{}"}`,
	} {
		s.Message([]byte(msg))
		if m := c.takeOne(t); m.Event != "pusher:error" {
			t.Errorf("message %q: got %+v, want pusher:error", msg, m)
		}
	}
}

func TestSubscribePublic(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	msgs := e.mustSubscribe(t, s, c, "news", "")
	if len(msgs) != 1 || msgs[0].str() != "{}" {
		t.Fatalf("got %+v, want one subscription_succeeded with data \"{}\"", msgs)
	}
	room := RoomKey(e.app.ID, "news")
	if e.rooms.Count(room) != 1 {
		t.Fatalf("rooms room %q has %d members, want 1", room, e.rooms.Count(room))
	}
	// Subscribing again is idempotent: confirmed again, counted once.
	e.mustSubscribe(t, s, c, "news", "")
	if got := e.p.states[e.app.ID].channel("news").subs; got != 1 {
		t.Fatalf("subscriptions = %d after a repeated subscribe, want 1", got)
	}
	send(t, s, "pusher:unsubscribe", "", map[string]string{"channel": "news"})
	send(t, s, "pusher:unsubscribe", "", map[string]string{"channel": "news"})
	c.expectNone(t)
	if e.rooms.Count(room) != 0 || len(e.p.states[e.app.ID].occupied("")) != 0 {
		t.Fatal("channel still occupied after unsubscribe")
	}
}

func TestSubscribeDataAsString(t *testing.T) {
	// Some clients send data as a string holding the JSON object.
	e := newTestEnv(t)
	s, c := e.connect(t)
	send(t, s, "pusher:subscribe", "", `{"channel":"news"}`)
	if m := c.takeOne(t); m.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("got %+v", m)
	}
}

func TestSubscribeAuth(t *testing.T) {
	e := newTestEnv(t)
	const member = `{"user_id":"u1","user_info":{"name":"U"}}`
	tests := []struct {
		name    string
		channel string
		auth    func(socketID string) string
		data    string
		ok      bool
	}{
		{"private good", "private-a", func(id string) string { return ChannelAuth(e.app, id, "private-a", "") }, "", true},
		{"private missing auth", "private-a", func(string) string { return "" }, "", false},
		{"private other socket", "private-a", func(string) string { return ChannelAuth(e.app, "1.1", "private-a", "") }, "", false},
		{"private other channel", "private-a", func(id string) string { return ChannelAuth(e.app, id, "private-b", "") }, "", false},
		{"private wrong secret", "private-a", func(id string) string {
			return ChannelAuth(&App{Key: e.app.Key, Secret: "wrong"}, id, "private-a", "")
		}, "", false},
		{"private wrong key", "private-a", func(id string) string {
			return ChannelAuth(&App{Key: "other", Secret: e.app.Secret}, id, "private-a", "")
		}, "", false},
		{"private uppercase hex", "private-a", func(id string) string {
			a := ChannelAuth(e.app, id, "private-a", "")
			return e.app.Key + ":" + strings.ToUpper(a[len(e.app.Key)+1:])
		}, "", false},
		{"encrypted good", "private-encrypted-a", func(id string) string { return ChannelAuth(e.app, id, "private-encrypted-a", "") }, "", true},
		{"private-cache good", "private-cache-a", func(id string) string { return ChannelAuth(e.app, id, "private-cache-a", "") }, "", true},
		{"presence good", "presence-a", func(id string) string { return ChannelAuth(e.app, id, "presence-a", member) }, member, true},
		{"presence signature without channel_data", "presence-a", func(id string) string { return ChannelAuth(e.app, id, "presence-a", "") }, member, false},
		{"presence tampered channel_data", "presence-a", func(id string) string {
			return ChannelAuth(e.app, id, "presence-a", `{"user_id":"admin"}`)
		}, member, false},
		{"public needs no auth", "news", func(string) string { return "" }, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := e.connect(t)
			defer s.Closed()
			d := map[string]string{"channel": tt.channel, "auth": tt.auth(s.SocketID())}
			if tt.data != "" {
				d["channel_data"] = tt.data
			}
			send(t, s, "pusher:subscribe", "", d)
			msgs := c.take(t)
			if len(msgs) == 0 {
				t.Fatal("no reply")
			}
			m := msgs[0]
			if tt.ok {
				if m.Event != "pusher_internal:subscription_succeeded" {
					t.Fatalf("got %+v, want subscription_succeeded", m)
				}
				return
			}
			var se struct {
				Type   string
				Error  string
				Status int
			}
			m.decode(t, &se)
			if m.Event != "pusher:subscription_error" || m.Channel != tt.channel || se.Type != "AuthError" || se.Status != 401 || se.Error == "" {
				t.Fatalf("got %+v %+v, want subscription_error AuthError 401", m, se)
			}
			if e.rooms.Count(RoomKey(e.app.ID, tt.channel)) != 0 {
				t.Fatal("refused connection is in the room")
			}
		})
	}
}

func TestSubscribeInvalidChannel(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	for _, name := range []string{"", "bad channel", strings.Repeat("x", 165), "#server-to-user-1"} {
		msgs := e.subscribe(t, s, c, name, "")
		if len(msgs) != 1 || msgs[0].Event != "pusher:subscription_error" {
			t.Errorf("subscribe %q: got %+v, want subscription_error", name, msgs)
		}
	}
}

func TestChannelsPerConnectionLimit(t *testing.T) {
	app := DefaultApp()
	app.MaxChannelsPerConn = 3
	e := newTestEnv(t, app)
	s, c := e.connect(t)
	for i := range 3 {
		e.mustSubscribe(t, s, c, fmt.Sprint("c", i), "")
	}
	msgs := e.subscribe(t, s, c, "c3", "")
	var se struct{ Type string }
	msgs[0].decode(t, &se)
	if msgs[0].Event != "pusher:subscription_error" || se.Type != "LimitReached" {
		t.Fatalf("4th channel: got %+v, want LimitReached", msgs)
	}
	e.mustSubscribe(t, s, c, "c0", "") // re-subscribing is not a new channel
	send(t, s, "pusher:unsubscribe", "", map[string]string{"channel": "c0"})
	e.mustSubscribe(t, s, c, "c3", "")
}

// presence is the data of a presence subscription_succeeded.
type presence struct {
	Presence struct {
		IDs   []string                   `json:"ids"`
		Hash  map[string]json.RawMessage `json:"hash"`
		Count int                        `json:"count"`
	} `json:"presence"`
}

func memberJSON(id, name string) string {
	return fmt.Sprintf(`{"user_id":%q,"user_info":{"name":%q}}`, id, name)
}

func TestPresenceCountsUsersNotConnections(t *testing.T) {
	e := newTestEnv(t)
	const ch = "presence-room"
	alice1, ca1 := e.connect(t)
	bob, cb := e.connect(t)
	alice2, ca2 := e.connect(t)

	// Alice's first tab: she is the only member.
	msgs := e.mustSubscribe(t, alice1, ca1, ch, memberJSON("alice", "Alice"))
	var p presence
	msgs[0].decode(t, &p)
	if !reflect.DeepEqual(p.Presence.IDs, []string{"alice"}) || p.Presence.Count != 1 ||
		string(p.Presence.Hash["alice"]) != `{"name":"Alice"}` {
		t.Fatalf("first subscription: %+v", p)
	}

	// Bob joins: Alice hears member_added, Bob sees both.
	msgs = e.mustSubscribe(t, bob, cb, ch, memberJSON("bob", "Bob"))
	msgs[0].decode(t, &p)
	if !reflect.DeepEqual(p.Presence.IDs, []string{"alice", "bob"}) || p.Presence.Count != 2 {
		t.Fatalf("bob's subscription: %+v", p)
	}
	m := ca1.takeOne(t)
	var added struct {
		UserID   string          `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	m.decode(t, &added)
	if m.Event != "pusher_internal:member_added" || m.Channel != ch || added.UserID != "bob" || string(added.UserInfo) != `{"name":"Bob"}` {
		t.Fatalf("alice got %+v %+v, want member_added bob", m, added)
	}
	cb.expectNone(t) // no member_added for oneself

	// Alice's second tab: still two members, nobody is told anything.
	msgs = e.mustSubscribe(t, alice2, ca2, ch, memberJSON("alice", "Alice"))
	msgs[0].decode(t, &p)
	if p.Presence.Count != 2 {
		t.Fatalf("second tab sees %d members, want 2", p.Presence.Count)
	}
	ca1.expectNone(t)
	cb.expectNone(t)
	if got := e.p.states[e.app.ID].channel(ch); got.users != 2 || got.subs != 3 {
		t.Fatalf("channel state %+v, want 2 users, 3 subscriptions", got)
	}

	// The first tab leaves: Alice is still there.
	send(t, alice1, "pusher:unsubscribe", "", map[string]string{"channel": ch})
	cb.expectNone(t)
	ca2.expectNone(t)

	// The last tab closes: Bob hears member_removed.
	alice2.Closed()
	m = cb.takeOne(t)
	var removed struct {
		UserID string `json:"user_id"`
	}
	m.decode(t, &removed)
	if m.Event != "pusher_internal:member_removed" || removed.UserID != "alice" {
		t.Fatalf("bob got %+v, want member_removed alice", m)
	}
	if ids := e.p.states[e.app.ID].members(ch); !reflect.DeepEqual(ids, []string{"bob"}) {
		t.Fatalf("members = %v, want [bob]", ids)
	}
	bob.Closed()
	if len(e.p.states[e.app.ID].occupied("")) != 0 {
		t.Fatal("channel still occupied after everyone left")
	}
}

func TestPresenceNumericUserID(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	msgs := e.mustSubscribe(t, s, c, "presence-x", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`)
	var p presence
	msgs[0].decode(t, &p)
	if !reflect.DeepEqual(p.Presence.IDs, []string{"10"}) {
		t.Fatalf("ids = %v, want [10]", p.Presence.IDs)
	}
}

func TestPresenceLimits(t *testing.T) {
	app := DefaultApp()
	app.MaxPresenceMembers = 2
	app.MaxUserInfoBytes = 20
	app.MaxPresenceIDLen = 8
	e := newTestEnv(t, app)
	// Fill the channel with two users (one with two tabs).
	for _, id := range []string{"a", "b", "a"} {
		s, c := e.connect(t)
		e.mustSubscribe(t, s, c, "presence-full", fmt.Sprintf(`{"user_id":%q}`, id))
	}
	tests := []struct {
		name, channel, data, typ string
	}{
		{"channel full", "presence-full", `{"user_id":"c"}`, "LimitReached"},
		{"user_info too big", "presence-x", `{"user_id":"c","user_info":{"name":"0123456789abcdef"}}`, "LimitReached"},
		{"id too long", "presence-x", `{"user_id":"123456789"}`, "AuthError"},
		{"no user_id", "presence-x", `{"user_info":{}}`, "AuthError"},
		{"empty user_id", "presence-x", `{"user_id":""}`, "AuthError"},
		{"user_id object", "presence-x", `{"user_id":{}}`, "AuthError"},
		{"not JSON", "presence-x", `user`, "AuthError"},
		{"no channel_data", "presence-x", ``, "AuthError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := e.connect(t)
			msgs := e.subscribe(t, s, c, tt.channel, tt.data)
			var se struct{ Type string }
			if len(msgs) != 1 {
				t.Fatalf("got %+v", msgs)
			}
			msgs[0].decode(t, &se)
			if msgs[0].Event != "pusher:subscription_error" || se.Type != tt.typ {
				t.Fatalf("got %+v, want subscription_error %s", msgs, tt.typ)
			}
		})
	}
	// An existing user may still open another tab on the full channel.
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "presence-full", `{"user_id":"b"}`)
}

func TestClientEvents(t *testing.T) {
	noEvents := DefaultApp()
	noEvents.ID, noEvents.Key, noEvents.ClientEvents = "quiet", "quiet-key", false
	e := newTestEnv(t, DefaultApp(), noEvents)

	type peer struct {
		s *Session
		c *fakeConn
	}
	join := func(e *testEnv, channel, userID string) peer {
		s, c := e.connect(t)
		cd := ""
		if classify(channel)&kindPresence != 0 {
			cd = fmt.Sprintf(`{"user_id":%q}`, userID)
		}
		e.mustSubscribe(t, s, c, channel, cd)
		c.take(t) // member_added of later joiners is not what this test is about
		return peer{s, c}
	}

	tests := []struct {
		name     string
		app      string // app ID
		channel  string // both peers subscribe here
		sendOn   string // channel the event is sent on; "" means channel
		event    string
		data     any
		ok       bool
		wantUser string
	}{
		{"private", "chatd", "private-c", "", "client-typing", map[string]any{"who": "me"}, true, ""},
		{"presence adds user_id", "chatd", "presence-c", "", "client-typing", map[string]any{}, true, "u-sender"},
		{"string data", "chatd", "private-c", "", "client-x", `{"a":1}`, true, ""},
		{"private-cache", "chatd", "private-cache-c", "", "client-x", 1, true, ""},
		{"public channel", "chatd", "public-c", "", "client-x", 1, false, ""},
		{"cache channel", "chatd", "cache-c", "", "client-x", 1, false, ""},
		{"encrypted channel", "chatd", "private-encrypted-c", "", "client-x", 1, false, ""},
		{"not subscribed", "chatd", "private-c", "private-other", "client-x", 1, false, ""},
		{"disabled for app", "quiet", "private-c", "", "client-x", 1, false, ""},
		{"data too large", "chatd", "private-c", "", "client-x", strings.Repeat("x", 10241), false, ""},
		{"data at limit", "chatd", "private-c", "", "client-x", strings.Repeat("x", 10240), true, ""},
		{"name too long", "chatd", "private-c", "", "client-" + strings.Repeat("x", 200), 1, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := *e
			env.app, _ = e.p.apps.ByID(tt.app)
			sender := join(&env, tt.channel, "u-sender")
			receiver := join(&env, tt.channel, "u-receiver")
			defer sender.s.Closed()
			defer receiver.s.Closed()
			sender.c.take(t)
			on := tt.sendOn
			if on == "" {
				on = tt.channel
			}
			send(t, sender.s, tt.event, on, tt.data)
			if !tt.ok {
				if m := sender.c.takeOne(t); m.Event != "pusher:error" {
					t.Fatalf("sender got %+v, want pusher:error", m)
				}
				receiver.c.expectNone(t)
				return
			}
			sender.c.expectNone(t) // not echoed
			m := receiver.c.takeOne(t)
			wantData, _ := json.Marshal(tt.data)
			if s, ok := tt.data.(string); ok {
				wantData = []byte(s)
			}
			if m.Event != tt.event || m.Channel != tt.channel || m.Data[0] != '"' || m.str() != string(wantData) || m.UserID != tt.wantUser {
				t.Fatalf("receiver got %+v (data %s), want %s on %s with data %s and user_id %q",
					m, m.str(), tt.event, tt.channel, wantData, tt.wantUser)
			}
		})
	}
}

func TestClientEventRateLimit(t *testing.T) {
	e := newTestEnv(t) // 10 per second
	s, c := e.connect(t)
	r, rc := e.connect(t)
	e.mustSubscribe(t, s, c, "private-r", "")
	e.mustSubscribe(t, r, rc, "private-r", "")
	trigger := func() (accepted bool) {
		t.Helper()
		send(t, s, "client-n", "private-r", 1)
		msgs := c.take(t)
		if len(msgs) == 0 {
			rc.takeOne(t)
			return true
		}
		var d struct{ Code int }
		msgs[0].decode(t, &d)
		if msgs[0].Event != "pusher:error" || d.Code != CodeClientEventRateLimited {
			t.Fatalf("got %+v, want pusher:error %d", msgs, CodeClientEventRateLimited)
		}
		rc.expectNone(t)
		return false
	}
	for i := range 10 {
		if !trigger() {
			t.Fatalf("event %d of a burst of 10 rejected", i+1)
		}
	}
	if trigger() {
		t.Fatal("11th event within the same second accepted")
	}
	e.clock.Advance(100 * time.Millisecond)
	if !trigger() {
		t.Fatal("event 100 ms later rejected (one token refills every 100 ms)")
	}
	if trigger() {
		t.Fatal("second event 100 ms later accepted")
	}
	e.clock.Advance(5 * time.Second) // refills a full burst, not more
	for i := range 10 {
		if !trigger() {
			t.Fatalf("event %d after a pause rejected", i+1)
		}
	}
	if trigger() {
		t.Fatal("burst after a pause exceeded 10")
	}
	if c.closeCode() != 0 {
		t.Fatal("rate limiting closed the connection")
	}
}

func TestCacheChannel(t *testing.T) {
	e := newTestEnv(t)
	st := e.p.states[e.app.ID]
	s, c := e.connect(t)
	msgs := e.mustSubscribe(t, s, c, "cache-score", "")
	if len(msgs) != 2 || msgs[1].Event != "pusher:cache_miss" || msgs[1].Channel != "cache-score" {
		t.Fatalf("got %+v, want subscription_succeeded then cache_miss", msgs)
	}
	e.p.publishEvent(st, event{name: "goal", data: `{"score":"1-0"}`, channels: []string{"cache-score"}})
	e.p.publishEvent(st, event{name: "goal", data: `{"score":"2-0"}`, channels: []string{"cache-score"}})
	if got := c.take(t); len(got) != 2 {
		t.Fatalf("subscriber got %d events, want 2", len(got))
	}
	s2, c2 := e.connect(t)
	msgs = e.mustSubscribe(t, s2, c2, "cache-score", "")
	if len(msgs) != 2 || msgs[1].Event != "goal" || msgs[1].str() != `{"score":"2-0"}` {
		t.Fatalf("late subscriber got %+v, want the last event replayed", msgs)
	}
	if data, ttl, ok := st.cached("cache-score"); !ok || data != `{"score":"2-0"}` || ttl != CacheTTL {
		t.Fatalf("cached = %q %v %v", data, ttl, ok)
	}
	e.clock.Advance(CacheTTL)
	s3, c3 := e.connect(t)
	msgs = e.mustSubscribe(t, s3, c3, "cache-score", "")
	if len(msgs) != 2 || msgs[1].Event != "pusher:cache_miss" {
		t.Fatalf("after the TTL got %+v, want cache_miss", msgs)
	}
	// An expired entry is swept on the next store.
	e.p.publishEvent(st, event{name: "x", data: "1", channels: []string{"cache-other"}})
	if _, ok := st.cache.entries["cache-score"]; ok {
		t.Fatal("expired cache entry not swept")
	}
}

func TestPresenceCacheChannelReplaysClientEvent(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "presence-cache-p", `{"user_id":"u"}`)
	send(t, s, "client-state", "presence-cache-p", map[string]int{"v": 1})
	s2, c2 := e.connect(t)
	msgs := e.mustSubscribe(t, s2, c2, "presence-cache-p", `{"user_id":"v"}`)
	if len(msgs) != 2 || msgs[1].Event != "client-state" || msgs[1].UserID != "u" {
		t.Fatalf("got %+v, want the cached client event with user_id", msgs)
	}
}

func TestSignin(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	userData := `{"id":"42","user_info":{"name":"Ann"}}`

	// A user channel needs a signed-in connection.
	if msgs := e.subscribe(t, s, c, "#server-to-user-42", ""); msgs[0].Event != "pusher:subscription_error" {
		t.Fatalf("user channel before signin: %+v", msgs)
	}
	send(t, s, "pusher:signin", "", map[string]string{"auth": UserAuth(e.app, "1.1", userData), "user_data": userData})
	m := c.takeOne(t)
	var d struct{ Code int }
	m.decode(t, &d)
	if m.Event != "pusher:error" || d.Code != CodeUnauthorized {
		t.Fatalf("bad signin signature: got %+v", m)
	}

	send(t, s, "pusher:signin", "", map[string]string{"auth": UserAuth(e.app, s.SocketID(), userData), "user_data": userData})
	m = c.takeOne(t)
	var ok struct {
		UserData string `json:"user_data"`
	}
	m.decode(t, &ok)
	if m.Event != "pusher:signin_success" || ok.UserData != userData || s.UserID() != "42" {
		t.Fatalf("got %+v (user %q), want signin_success", m, s.UserID())
	}
	e.mustSubscribe(t, s, c, "#server-to-user-42", "")
	if msgs := e.subscribe(t, s, c, "#server-to-user-43", ""); msgs[0].Event != "pusher:subscription_error" {
		t.Fatalf("another user's channel: %+v", msgs)
	}
	e.p.publishEvent(e.p.states[e.app.ID], event{name: "note", data: "hi", channels: []string{"#server-to-user-42"}})
	if m := c.takeOne(t); m.Event != "note" || m.str() != "hi" {
		t.Fatalf("got %+v, want the event sent to the user", m)
	}
	if len(e.p.states[e.app.ID].occupied("")) != 0 {
		t.Fatal("a user channel is listed among occupied channels")
	}

	other := `{"id":"7"}`
	send(t, s, "pusher:signin", "", map[string]string{"auth": UserAuth(e.app, s.SocketID(), other), "user_data": other})
	if m := c.takeOne(t); m.Event != "pusher:error" {
		t.Fatalf("signin as another user: %+v", m)
	}
	noID := `{"name":"x"}`
	s2, c2 := e.connect(t)
	send(t, s2, "pusher:signin", "", map[string]string{"auth": UserAuth(e.app, s2.SocketID(), noID), "user_data": noID})
	if m := c2.takeOne(t); m.Event != "pusher:error" {
		t.Fatalf("signin without id: %+v", m)
	}

	s.Closed()
	if conns := e.p.states[e.app.ID].userConns("42"); len(conns) != 0 {
		t.Fatalf("user index keeps %d closed connections", len(conns))
	}
}

func TestClosedIsIdempotentAndFinal(t *testing.T) {
	e := newTestEnv(t)
	s, c := e.connect(t)
	e.mustSubscribe(t, s, c, "news", "")
	s.Closed()
	s.Closed()
	send(t, s, "pusher:subscribe", "", map[string]string{"channel": "other"})
	send(t, s, "pusher:ping", "", nil)
	c.expectNone(t)
	st := e.p.states[e.app.ID]
	if len(st.occupied("")) != 0 || st.conn(s.SocketID()) != nil || e.rooms.Count(RoomKey(e.app.ID, "news")) != 0 {
		t.Fatal("closed session left state behind")
	}
}

func TestRoomKeysSeparateApps(t *testing.T) {
	other := App{ID: "other", Key: "other-key", Secret: "s"}
	e := newTestEnv(t, DefaultApp(), other)
	s1, c1 := e.connect(t)
	e.mustSubscribe(t, s1, c1, "news", "")
	e2 := *e
	e2.app, _ = e.p.apps.ByID("other")
	s2, c2 := e2.connect(t)
	e2.mustSubscribe(t, s2, c2, "news", "")
	e.p.publishEvent(e.p.states["other"], event{name: "n", data: "d", channels: []string{"news"}})
	c1.expectNone(t)
	if m := c2.takeOne(t); m.Event != "n" {
		t.Fatalf("got %+v", m)
	}
}

// TestCacheEvictsOldest: the cache of an app holds at most
// DefaultMaxCacheChannels channels; storing one more evicts the oldest,
// and a channel that gets a new event becomes the newest.
func TestCacheEvictsOldest(t *testing.T) {
	e := newTestEnv(t)
	st := e.p.states[e.app.ID]
	const limit = 1000 // DefaultMaxCacheChannels
	store := func(i int) {
		ch := "cache-" + strconv.Itoa(i)
		e.p.publishEvent(st, event{name: "e", data: strconv.Itoa(i), channels: []string{ch}})
	}
	for i := range limit {
		store(i)
	}
	store(0) // the newest again
	store(limit)
	if len(st.cache.entries) != limit {
		t.Fatalf("cache holds %d channels, want %d", len(st.cache.entries), limit)
	}
	if _, _, ok := st.cached("cache-1"); ok {
		t.Fatal("cache-1, the oldest, was not evicted")
	}
	for _, i := range []int{0, 2, limit} {
		if data, _, ok := st.cached("cache-" + strconv.Itoa(i)); !ok || data != strconv.Itoa(i) {
			t.Fatalf("cache-%d: %q %v, want kept", i, data, ok)
		}
	}
	s, c := e.connect(t)
	if msgs := e.mustSubscribe(t, s, c, "cache-1", ""); len(msgs) != 2 || msgs[1].Event != "pusher:cache_miss" {
		t.Fatalf("evicted channel: %+v, want cache_miss", msgs)
	}
}

// TestCacheBytesBounded: 10 KB events to ever new cache channels stop
// growing the cache at DefaultMaxCacheBytes.
func TestCacheBytesBounded(t *testing.T) {
	e := newTestEnv(t)
	st := e.p.states[e.app.ID]
	data := strings.Repeat("a", DefaultMaxEventBytes)
	for i := range 2000 {
		e.p.publishEvent(st, event{name: "e", data: data, channels: []string{"cache-" + strconv.Itoa(i)}})
	}
	total := 0
	for _, ce := range st.cache.entries {
		total += len(ce.msg) + len(ce.data)
	}
	if total > 16<<20 {
		t.Fatalf("2000 events of 10 KB: the cache holds %d channels, %d bytes; want at most 16 MiB", len(st.cache.entries), total)
	}
	if _, _, ok := st.cached("cache-1999"); !ok {
		t.Fatal("the newest event was not cached")
	}
}
