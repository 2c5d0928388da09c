package pusher

import (
	"encoding/json"
	"net/url"
	"sync"
	"testing"
	"time"
)

// fakeConn records what the protocol sends to one connection.
type fakeConn struct {
	mu     sync.Mutex
	msgs   [][]byte
	closed bool
	code   int
	reason string
}

func (c *fakeConn) Send(msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, msg)
}

func (c *fakeConn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed, c.code, c.reason = true, code, reason
	}
}

func (c *fakeConn) closeCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

// wireMsg is a decoded message as a client sees it.
type wireMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
}

// str returns the data as a string: the value of a JSON string, else the
// JSON text.
func (m wireMsg) str() string {
	s, err := dataString(m.Data)
	if err != nil {
		panic(err)
	}
	return s
}

// decode decodes the data (a JSON string holding JSON, or an object) into v.
func (m wireMsg) decode(t *testing.T, v any) {
	t.Helper()
	if err := decodeData(m.Data, v); err != nil {
		t.Fatalf("decode data of %s: %v (%s)", m.Event, err, m.Data)
	}
}

// take returns and forgets the messages received so far, failing the test
// on a message that is not a JSON object.
func (c *fakeConn) take(t *testing.T) []wireMsg {
	t.Helper()
	c.mu.Lock()
	raw := c.msgs
	c.msgs = nil
	c.mu.Unlock()
	out := make([]wireMsg, len(raw))
	for i, b := range raw {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("message %q is not valid JSON: %v", b, err)
		}
	}
	return out
}

// takeOne returns the only message received, failing otherwise.
func (c *fakeConn) takeOne(t *testing.T) wireMsg {
	t.Helper()
	msgs := c.take(t)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1: %+v", len(msgs), msgs)
	}
	return msgs[0]
}

// expectNone fails if anything was received.
func (c *fakeConn) expectNone(t *testing.T) {
	t.Helper()
	if msgs := c.take(t); len(msgs) != 0 {
		t.Fatalf("got %d unexpected messages: %+v", len(msgs), msgs)
	}
}

// fakeRooms is an in-memory Rooms delivering synchronously.
type fakeRooms struct {
	mu        sync.Mutex
	rooms     map[string]map[Conn]bool
	published int
}

func newFakeRooms() *fakeRooms { return &fakeRooms{rooms: make(map[string]map[Conn]bool)} }

func (h *fakeRooms) Subscribe(room string, c Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[room] == nil {
		h.rooms[room] = make(map[Conn]bool)
	}
	h.rooms[room][c] = true
}

func (h *fakeRooms) Unsubscribe(room string, c Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rooms[room], c)
	if len(h.rooms[room]) == 0 {
		delete(h.rooms, room)
	}
}

func (h *fakeRooms) Publish(room string, msg []byte, except Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.published++
	for c := range h.rooms[room] {
		if c != except {
			c.Send(msg)
		}
	}
}

func (h *fakeRooms) Count(room string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms[room])
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testEnv is a Protocol on a fake rooms and clock.
type testEnv struct {
	p     *Protocol
	rooms *fakeRooms
	clock *fakeClock
	app   *App
}

// newTestEnv returns a Protocol for the given apps (the default app when
// none); env.app is the first given.
func newTestEnv(t *testing.T, apps ...App) *testEnv {
	t.Helper()
	reg, err := NewApps(apps...)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{rooms: newFakeRooms(), clock: &fakeClock{now: time.Unix(1_700_000_000, 0)}}
	e.p, err = New(Config{Apps: reg, Rooms: e.rooms, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	first := DefaultAppID
	if len(apps) > 0 {
		first = apps[0].ID
	}
	e.app, _ = reg.ByID(first)
	return e
}

// connect opens a connection to env.app and consumes connection_established.
func (e *testEnv) connect(t *testing.T) (*Session, *fakeConn) {
	t.Helper()
	c := &fakeConn{}
	s := e.p.Open(c, e.app.Key, url.Values{"protocol": {"7"}})
	if s == nil {
		t.Fatalf("Open refused: close %d %s", c.code, c.reason)
	}
	if m := c.takeOne(t); m.Event != "pusher:connection_established" {
		t.Fatalf("first message %+v, want connection_established", m)
	}
	return s, c
}

// send sends {"event":event,"channel":channel,"data":data} as a client.
func send(t *testing.T, s *Session, event, channel string, data any) {
	t.Helper()
	msg := map[string]any{"event": event, "data": data}
	if channel != "" {
		msg["channel"] = channel
	}
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	s.Message(b)
}

// subscribe sends a correctly authorized pusher:subscribe (channelData is
// the presence member JSON, "" for others) and returns the replies.
func (e *testEnv) subscribe(t *testing.T, s *Session, c *fakeConn, channel, channelData string) []wireMsg {
	t.Helper()
	d := map[string]string{"channel": channel}
	if classify(channel).authorized() {
		d["auth"] = ChannelAuth(e.app, s.SocketID(), channel, channelData)
	}
	if channelData != "" {
		d["channel_data"] = channelData
	}
	send(t, s, "pusher:subscribe", "", d)
	return c.take(t)
}

// mustSubscribe subscribes and fails unless subscription_succeeded came first.
func (e *testEnv) mustSubscribe(t *testing.T, s *Session, c *fakeConn, channel, channelData string) []wireMsg {
	t.Helper()
	msgs := e.subscribe(t, s, c, channel, channelData)
	if len(msgs) == 0 || msgs[0].Event != "pusher_internal:subscription_succeeded" || msgs[0].Channel != channel {
		t.Fatalf("subscribe %s: got %+v, want subscription_succeeded", channel, msgs)
	}
	return msgs
}
