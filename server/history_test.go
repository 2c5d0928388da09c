package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
)

// readN reads n messages from a gorilla connection, with their types.
func readN(t *testing.T, c *gorilla.Conn, n int, within time.Duration) (types []int, msgs []string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	defer c.SetReadDeadline(time.Time{})
	for len(msgs) < n {
		mt, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(msgs), n, err)
		}
		types = append(types, mt)
		msgs = append(msgs, string(b))
	}
	return types, msgs
}

// silent fails if c receives a message within d.
func silent(t *testing.T, c *gorilla.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	if _, b, err := c.ReadMessage(); err == nil {
		t.Fatalf("unexpected message %q", b)
	}
}

func TestRawHistoryReplaysLastNThenLive(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, path := range []string{"/chat", "/chat/room-1"} {
		t.Run(path, func(t *testing.T) {
			sender, _, err := gorilla.DefaultDialer.Dial(wsURL(s, path), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer sender.Close()
			waitConns(t, s, 1)
			base := s.hist.Stats().Appended
			// Text and binary messages keep their opcodes in the replay.
			for i := 1; i <= 5; i++ {
				mt := gorilla.TextMessage
				if i == 2 {
					mt = gorilla.BinaryMessage
				}
				if err := sender.WriteMessage(mt, []byte("m"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			testutil.CheckFor(t, 5*time.Second, func() error {
				if n := s.hist.Stats().Appended - base; n < 5 {
					return fmt.Errorf("%d appended", n)
				}
				return nil
			})
			late, _, err := gorilla.DefaultDialer.Dial(wsURL(s, path+"?history=4"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer late.Close()
			// A joiner without ?history gets nothing from before it came.
			plain, _, err := gorilla.DefaultDialer.Dial(wsURL(s, path), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			waitConns(t, s, 3)
			sender.WriteMessage(gorilla.TextMessage, []byte("live"))
			types, got := readN(t, late, 5, 5*time.Second)
			if want := "[m2 m3 m4 m5 live]"; fmt.Sprint(got) != want {
				t.Fatalf("late joiner got %v, want %v", got, want)
			}
			if types[0] != gorilla.BinaryMessage || types[1] != gorilla.TextMessage {
				t.Fatalf("opcodes %v: m2 was binary", types)
			}
			if _, got := readN(t, plain, 1, 5*time.Second); got[0] != "live" {
				t.Fatalf("plain joiner got %v first", got)
			}
			silent(t, late, 200*time.Millisecond)
			sender.Close()
			late.Close()
			plain.Close()
			waitConns(t, s, 0)
		})
	}
}

// While a sender floods a room, members join with ?history=N: each must
// see a run of consecutive messages, none missing or twice at the seam
// between the replay and the live ones, up to the last.
func TestRawHistorySeamUnderLoad(t *testing.T) {
	s := newTestServer(t, Config{HistorySize: 50})
	ctx := context.Background()
	sender, _, err := websocket.Dial(ctx, wsURL(s, "/chat/seam"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	const total = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			if err := sender.Write(ctx, websocket.MessageText, []byte(strconv.Itoa(i))); err != nil {
				return
			}
			if i%100 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for j := 0; j < 20; j++ {
		time.Sleep(3 * time.Millisecond)
		c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/seam?history=50"), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			prev := 0
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for prev < total {
				_, b, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("after %d: %v", prev, err)
					return
				}
				n, _ := strconv.Atoi(string(b))
				if prev != 0 && n != prev+1 {
					errs <- fmt.Errorf("got %d after %d", n, prev)
					return
				}
				prev = n
			}
		}()
	}
	wg.Wait()
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRawHistoryBadValues(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, q := range []string{"history=-1", "history=abc", "history=99999999999999999999", "history=1.5"} {
		_, resp, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/r?"+q), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("?%s: err %v, response %v; want 400", q, err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "history must be a whole number") {
			t.Fatalf("?%s: body %q", q, body)
		}
	}
	// A huge but valid N is capped at the room's history size.
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/r?history=2000000000"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestRawHistoryOffAndBounds(t *testing.T) {
	off := newTestServer(t, Config{HistorySize: -1})
	if off.hist != nil {
		t.Fatal("history off still made a store")
	}
	a, _, err := gorilla.DefaultDialer.Dial(wsURL(off, "/chat/x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.WriteMessage(gorilla.TextMessage, []byte("before"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if off.stats.MessagesIn.Load() != 1 {
			return fmt.Errorf("message not read yet")
		}
		return nil
	})
	b, _, err := gorilla.DefaultDialer.Dial(wsURL(off, "/chat/x?history=10"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	silent(t, b, 200*time.Millisecond)

	// Many rooms, a small total: the store stays within it and forgets the
	// least recently published rooms (counted).
	const max = 64 << 10
	s := newTestServer(t, Config{HistorySize: 100, HistoryMaxBytes: max, AdminAddr: "127.0.0.1:0"})
	msg := strings.Repeat("x", 500)
	for r := 0; r < 40; r++ {
		c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/soak-"+strconv.Itoa(r)), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			c.WriteMessage(gorilla.TextMessage, []byte(msg))
		}
		c.Close()
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if st := s.hist.Stats(); st.Appended != 800 {
			return fmt.Errorf("appended %d", st.Appended)
		}
		return nil
	})
	st := s.hist.Stats()
	if st.Bytes > max || st.Evicted == 0 {
		t.Fatalf("stats %+v: want at most %d bytes and evictions", st, max)
	}
	// The newest room is whole.
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/soak-39?history=20"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readN(t, c, 20, 5*time.Second)
	// /metrics says so.
	resp, err := http.Get("http://" + s.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	found := false
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "chatd_history_evicted_rooms_total ") && !strings.HasSuffix(sc.Text(), " 0") {
			found = true
		}
	}
	if !found {
		t.Fatal("chatd_history_evicted_rooms_total missing or 0 in /metrics")
	}
}

// A replay of more frames than one writev takes (poller.MaxIovecs) is
// written whole, and live messages follow it.
func TestRawHistoryLongReplay(t *testing.T) {
	s := newTestServer(t, Config{HistorySize: 150})
	sender, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/long"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	for i := 1; i <= 150; i++ {
		sender.WriteMessage(gorilla.TextMessage, []byte(strconv.Itoa(i)))
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := s.hist.Stats().Appended; n != 150 {
			return fmt.Errorf("%d appended", n)
		}
		return nil
	})
	late, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/long?history=150"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	waitConns(t, s, 2)
	sender.WriteMessage(gorilla.TextMessage, []byte("live"))
	_, got := readN(t, late, 151, 5*time.Second)
	for i := 0; i < 150; i++ {
		if got[i] != strconv.Itoa(i+1) {
			t.Fatalf("message %d is %q", i, got[i])
		}
	}
	if got[150] != "live" {
		t.Fatalf("last %q", got[150])
	}
}

// The same for a Pusher subscriber that rewinds more events than one
// writev takes: it gets them all, then the live ones.
func TestPusherHistoryLongRewind(t *testing.T) {
	s := newTestServer(t, Config{HistorySize: 150})
	for i := 1; i <= 120; i++ {
		apiEvent(t, s, "long", strconv.Itoa(i))
	}
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"long","chatd_rewind":120}}`))
	_, got := readN(t, c, 2+120, 5*time.Second) // connection_established, subscription_succeeded, 120 events
	for i, m := range got[2:] {
		if !strings.Contains(m, fmt.Sprintf(`"data":"%d"`, i+1)) {
			t.Fatalf("event %d: %s", i+1, m)
		}
	}
}

// A flood of recovery requests (subscribe with chatd_rewind, unsubscribe,
// again, never reading) costs the flooder its connection, not anybody
// else their events.
func TestPusherRecoveryFloodDisturbsNoOne(t *testing.T) {
	s := newTestServer(t, Config{WriteQueue: 64 << 10})
	publish := func(i int) { apiEvent(t, s, "busy", strconv.Itoa(i)) }
	for i := 1; i <= 100; i++ {
		publish(i)
	}
	calm, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer calm.Close()
	calm.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"busy"}}`))
	readN(t, calm, 2, 5*time.Second)

	flood := dialRaw(t, s)
	// A WebSocket by hand: it writes and never reads.
	fmt.Fprintf(flood, "GET /app/chatd-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	sub := []byte(`{"event":"pusher:subscribe","data":{"channel":"busy","chatd_rewind":100}}`)
	unsub := []byte(`{"event":"pusher:unsubscribe","data":{"channel":"busy"}}`)
	go func() {
		for i := 0; i < 2000; i++ {
			for _, m := range [][]byte{sub, unsub} {
				if _, err := flood.Write(maskedText(m)); err != nil {
					return
				}
			}
		}
	}()
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := s.Stats().SlowConsumers.Load(); n == 0 {
			return fmt.Errorf("the flooder is not closed yet")
		}
		return nil
	})
	for i := 101; i <= 110; i++ {
		publish(i)
	}
	_, got := readN(t, calm, 10, 5*time.Second)
	for i, m := range got {
		if !strings.Contains(m, fmt.Sprintf(`"data":"%d"`, 101+i)) {
			t.Fatalf("the calm subscriber got %s as event %d", m, 101+i)
		}
	}
}

// maskedText frames p as a masked client text frame (mask 0: the bytes as
// they are; RFC 6455 requires the bit, not a random key, of a test).
func maskedText(p []byte) []byte {
	f := []byte{0x81}
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, 0, 0, 0, 0)
	return append(f, p...)
}

// apiEvent publishes event "n" with data to channel of the default app
// through s's signed HTTP API.
func apiEvent(t *testing.T, s *Server, channel, data string) {
	t.Helper()
	body := fmt.Sprintf(`{"name":"n","channel":%q,"data":%q}`, channel, data)
	q := url.Values{"auth_key": {"chatd-key"}, "auth_timestamp": {strconv.FormatInt(time.Now().Unix(), 10)},
		"auth_version": {"1.0"}, "body_md5": {pusher.BodyMD5([]byte(body))}}
	q.Set("auth_signature", pusher.SignRequest("chatd-secret", "POST", "/apps/chatd/events", q))
	resp, err := http.Post("http://"+s.Addr().String()+"/apps/chatd/events?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("event %s on %s: %d", data, channel, resp.StatusCode)
	}
}

// Per app (apps file): history_size 0 turns history off for that app,
// another size is that app's window; the flags' values are the rest's.
func TestPusherHistoryPerApp(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/apps.json"
	os.WriteFile(file, []byte(`{"apps":[
		{"id":"small","key":"small-key","secret":"small-secret","history_size":2},
		{"id":"none","key":"none-key","secret":"none-secret","history_size":0},
		{"id":"dflt","key":"dflt-key","secret":"dflt-secret"}]}`), 0o600)
	apps, err := pusher.LoadAppsFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Apps: apps, HistorySize: 5})
	publish := func(app, secret string, n int) {
		for i := 1; i <= n; i++ {
			body := fmt.Sprintf(`{"name":"n","channel":"c","data":"%d"}`, i)
			q := url.Values{"auth_key": {app + "-key"}, "auth_timestamp": {strconv.FormatInt(time.Now().Unix(), 10)},
				"auth_version": {"1.0"}, "body_md5": {pusher.BodyMD5([]byte(body))}}
			q.Set("auth_signature", pusher.SignRequest(secret, "POST", "/apps/"+app+"/events", q))
			resp, err := http.Post("http://"+s.Addr().String()+"/apps/"+app+"/events?"+q.Encode(), "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	rewind := func(app string, want int) []string {
		c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/"+app+"-key?protocol=7"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"c","chatd_rewind":10}}`))
		_, got := readN(t, c, 2+want, 5*time.Second)
		silent(t, c, 200*time.Millisecond)
		return got[1:]
	}
	for _, a := range []struct {
		app, secret string
		kept        int
	}{{"small", "small-secret", 2}, {"none", "none-secret", 0}, {"dflt", "dflt-secret", 5}} {
		publish(a.app, a.secret, 8)
		extra := 0
		if a.kept == 0 {
			extra = 1 // chatd:recovery_failed, history_off
		}
		got := rewind(a.app, a.kept+extra)
		if a.kept == 0 {
			if strings.Contains(got[0], "chatd_position") || !strings.Contains(got[1], `history_off`) {
				t.Fatalf("app %s: %q", a.app, got)
			}
			continue
		}
		for i, m := range got[1:] {
			if !strings.Contains(m, fmt.Sprintf(`"data":"%d"`, 8-a.kept+1+i)) {
				t.Fatalf("app %s: event %d is %s", a.app, i, m)
			}
		}
	}
}
