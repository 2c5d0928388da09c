package pusher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendQuotedMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `{"some":"data"}`, "tab\there\nnew\rret", "\x00\x01\x1f\x7f", `back\slash "quote"`,
		"<html>&amp;", "ünïcödé ✓ 😀", "\u2028\u2029", "bad utf8 \xff\xfe end", "\xc3", "a\xe2\x80",
	} {
		got := appendQuoted(nil, s)
		if len(got) != quotedLen(s) {
			t.Errorf("quotedLen(%q) = %d, appendQuoted wrote %d", s, quotedLen(s), len(got))
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendQuoted(%q) = %s: invalid JSON: %v", s, got, err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = decodeLikeJSON(s)
		}
		if back != want {
			t.Errorf("round trip of %q gave %q, want %q", s, back, want)
		}
		// Byte for byte what encoding/json writes without HTML escaping,
		// except that it spells \b and \f as such (Go 1.22) where we use \u00XX.
		if !strings.ContainsAny(s, "\b\f") {
			var std bytes.Buffer
			enc := json.NewEncoder(&std)
			enc.SetEscapeHTML(false)
			enc.Encode(s)
			if want := bytes.TrimSuffix(std.Bytes(), []byte("\n")); !bytes.Equal(got, want) {
				t.Errorf("appendQuoted(%q) = %s, encoding/json writes %s", s, got, want)
			}
		}
	}
}

// decodeLikeJSON is what encoding/json makes of s: each invalid byte
// becomes U+FFFD.
func decodeLikeJSON(s string) string {
	b, _ := json.Marshal(s)
	var out string
	json.Unmarshal(b, &out)
	return out
}

func TestEncodeEvent(t *testing.T) {
	got := string(encodeEvent("my-event", "my-channel", `{"a":"b"}`, ""))
	want := `{"event":"my-event","channel":"my-channel","data":"{\"a\":\"b\"}"}`
	if got != want {
		t.Errorf("encodeEvent = %s, want %s", got, want)
	}
	got = string(encodeEvent("client-x", "presence-p", "d", "u1"))
	if want := `{"event":"client-x","channel":"presence-p","data":"d","user_id":"u1"}`; got != want {
		t.Errorf("encodeEvent with user = %s, want %s", got, want)
	}
	got = string(encodeError(4301, "slow down"))
	if want := `{"event":"pusher:error","data":{"code":4301,"message":"slow down"}}`; got != want {
		t.Errorf("encodeError = %s, want %s", got, want)
	}
}

func TestEncodeEventAllocatesOnce(t *testing.T) {
	data := strings.Repeat(`{"text":"hello, \"world\"","n":1}`, 20)
	allocs := testing.AllocsPerRun(100, func() {
		encodeEvent("message", "presence-room-1", data, "")
	})
	if allocs != 1 {
		t.Fatalf("encodeEvent: %v allocations, want 1", allocs)
	}
}

func TestPublishEncodesOncePerChannel(t *testing.T) {
	e := newTestEnv(t)
	st := e.p.states[e.app.ID]
	ev := event{name: "m", data: strings.Repeat("x", 1000), channels: []string{"news"}}
	// One encoding (1 allocation) plus the room key (1 allocation).
	allocs := testing.AllocsPerRun(100, func() { e.p.publishEvent(st, ev) })
	if allocs > 2 {
		t.Fatalf("publish to one channel: %v allocations, want at most 2", allocs)
	}
}

// FuzzMessage feeds arbitrary frames to a session subscribed to every kind
// of channel. Nothing may panic, and everything sent back to the client,
// or to another subscriber, must be a JSON object with an event.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		`{"event":"pusher:ping","data":{}}`,
		`{"event":"pusher:subscribe","data":{"channel":"news"}}`,
		`{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"chatd-key:00"}}`,
		`{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"x","channel_data":"{\"user_id\":\"1\"}"}}`,
		`{"event":"pusher:subscribe","data":"{\"channel\":\"cache-a\"}"}`,
		`{"event":"pusher:unsubscribe","data":{"channel":"private-a"}}`,
		`{"event":"pusher:signin","data":{"auth":"a","user_data":"{\"id\":\"1\"}"}}`,
		`{"event":"client-x","channel":"private-a","data":{"a":"\u2028\ud800"}}`,
		`{"event":"client-x","channel":"presence-a","data":"str"}`,
		`{"event":"client-x","channel":"private-a","data":[1,2,{"x":null}]}`,
		`{"event":"x"}`, `{"event":"pusher:subscribe","data":null}`, `[]`, `{`, "\xff",
	} {
		f.Add([]byte(s))
		// Splits of valid messages are invalid ones worth trying.
		for i := 1; i < len(s); i += 7 {
			f.Add([]byte(s[:i]))
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		e := newTestEnv(t)
		s, c := e.connect(t)
		peer, pc := e.connect(t)
		for _, ch := range []string{"private-a", "private-cache-a", "cache-a"} {
			e.subscribe(t, s, c, ch, "")
			e.subscribe(t, peer, pc, ch, "")
		}
		e.subscribe(t, s, c, "presence-a", `{"user_id":"1"}`)
		e.subscribe(t, peer, pc, "presence-a", `{"user_id":"2"}`)
		c.take(t)
		pc.take(t)

		s.Message(frame)
		for _, conn := range []*fakeConn{c, pc} {
			for _, m := range conn.take(t) { // take fails on invalid JSON
				if m.Event == "" {
					t.Fatalf("frame %q: reply without event", frame)
				}
			}
		}
		s.Closed()
		peer.Closed()
		if n := len(e.p.states[e.app.ID].occupied("")); n != 0 {
			t.Fatalf("frame %q: %d channels occupied after both closed", frame, n)
		}
	})
}

func BenchmarkEncodeEvent(b *testing.B) {
	for _, size := range []int{16, 256, 4096} {
		data := strings.Repeat(`{"k":"v"}`, size/9+1)[:size]
		b.Run(fmt.Sprintf("data=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				encodeEvent("message", "presence-room", data, "")
			}
		})
	}
}

func BenchmarkClientEvent(b *testing.B) {
	app := DefaultApp()
	app.ClientEventsPerSecond = 1 << 30
	reg, _ := NewApps(app)
	rooms := newFakeRooms()
	p, _ := New(Config{Apps: reg, Rooms: rooms})
	c := &discardConn{}
	s := p.Open(c, app.Key, url.Values{"protocol": {"7"}})
	auth := ChannelAuth(&app, s.SocketID(), "private-b", "")
	s.Message([]byte(`{"event":"pusher:subscribe","data":{"channel":"private-b","auth":"` + auth + `"}}`))
	msg := []byte(`{"event":"client-typing","channel":"private-b","data":{"user":"someone","typing":true}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s.Message(msg)
	}
	if !bytes.Contains(c.last, []byte("subscription_succeeded")) {
		b.Fatalf("last message %s", c.last)
	}
}

type discardConn struct{ last []byte }

func (c *discardConn) Send(msg []byte)   { c.last = msg }
func (c *discardConn) Close(int, string) {}
