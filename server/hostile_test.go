package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
)

// Tests of what a hostile or broken client does, over real sockets: each
// reproduces a defect found from the outside and fails without its fix.

// closeWrite half-closes a client socket: the server reads EOF after
// whatever was written before it.
func closeWrite(t testing.TB, c net.Conn) {
	t.Helper()
	if rc, ok := c.(*rawConn); ok {
		c = rc.Conn
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("shutdown(SHUT_WR): %v", err)
	}
}

// waitSockets waits until the server owns n sockets.
func waitSockets(t testing.TB, s *Server, n int, timeout time.Duration) {
	t.Helper()
	checkFor(t, timeout, func() error {
		if got := s.Sockets(); got != n {
			return fmt.Errorf("server owns %d sockets, want %d", got, n)
		}
		return nil
	})
}

// TestFINRightBehindHandshakeIsNoticed: a client that sends its upgrade
// request and shutdown(SHUT_WR) in the same breath must not leave the
// server's socket in CLOSE-WAIT. Under edge-triggered epoll the data and
// the FIN can raise a single event; the server must read on to the EOF.
func TestFINRightBehindHandshakeIsNoticed(t *testing.T) {
	s := newTestServer(t, Config{})
	const n = 300
	head := handshakeHead(s, "GET", "/chat", nil)
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		closeWrite(t, c)
		conns[i] = c
	}
	// Each client gets its 101 (the request was valid) and then the end of
	// the connection, within a second of its FIN.
	waitSockets(t, s, 0, 1500*time.Millisecond)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(ioWait))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("reading until EOF: %v", err)
		}
	}
}

// TestFINRightBehindFrameIsNoticed: one frame and then FIN. The frame is
// delivered (nothing accepted is lost) and the connection ends at once.
func TestFINRightBehindFrameIsNoticed(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "fin")
	const n = 100
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c := rawUpgrade(t, s, "/chat/fin")
		msg := []byte(fmt.Sprintf("bye %d", i))
		writeBytes(t, c, frame(true, 0, opText, true, msg))
		closeWrite(t, c)
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
	}
	got := map[string]bool{}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		_, m, err := peer.ReadMessage()
		if err != nil {
			t.Fatalf("peer got %d of %d messages: %v", len(got), n, err)
		}
		got[string(m)] = true
	}
	waitSockets(t, s, 1, 1500*time.Millisecond)
	wg.Wait()
	if _, err := peer.NextWriter(gorilla.TextMessage); err != nil {
		t.Fatalf("the honest peer lost its connection: %v", err)
	}
}

// pusherPresenceMember connects to the default app with gorilla and joins
// presence channel ch as user, authorized by the demo endpoint.
func pusherPresenceMember(t *testing.T, s *Server, ch, user string) *gorilla.Conn {
	t.Helper()
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var est struct {
		Event string `json:"event"`
		Data  string `json:"data"`
	}
	if err := c.ReadJSON(&est); err != nil || est.Event != "pusher:connection_established" {
		t.Fatalf("connection_established: %+v %v", est, err)
	}
	var data struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal([]byte(est.Data), &data); err != nil {
		t.Fatal(err)
	}
	resp, err := http.PostForm("http://"+s.Addr().String()+"/pusher/auth",
		url.Values{"socket_id": {data.SocketID}, "channel_name": {ch}, "user": {user}})
	if err != nil {
		t.Fatal(err)
	}
	var auth struct {
		Auth        string `json:"auth"`
		ChannelData string `json:"channel_data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&auth)
	resp.Body.Close()
	if err != nil || auth.Auth == "" {
		t.Fatalf("demo auth: %v", err)
	}
	sub := map[string]any{"event": "pusher:subscribe", "data": map[string]string{
		"channel": ch, "auth": auth.Auth, "channel_data": auth.ChannelData}}
	if err := c.WriteJSON(sub); err != nil {
		t.Fatal(err)
	}
	for {
		var m struct{ Event string }
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for subscription_succeeded: %v", err)
		}
		if m.Event == "pusher_internal:subscription_succeeded" {
			return c
		}
	}
}

// TestPusherMemberGoneAtOnceAfterPongAndFIN: a presence member whose tab
// is killed right after a pong (the pong and the FIN in one breath) is
// removed at once, not at the next ping two minutes later.
func TestPusherMemberGoneAtOnceAfterPongAndFIN(t *testing.T) {
	s := newTestServer(t, Config{})
	const ch = "presence-fin"
	watcher := pusherPresenceMember(t, s, ch, "watcher")
	victim := pusherPresenceMember(t, s, ch, "victim")
	for {
		var m struct{ Event string }
		watcher.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := watcher.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for member_added: %v", err)
		}
		if m.Event == "pusher_internal:member_added" {
			break
		}
	}
	if err := victim.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:pong","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	closeWrite(t, victim.UnderlyingConn())
	start := time.Now()
	watcher.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		var m struct {
			Event string
			Data  string
		}
		if err := watcher.ReadJSON(&m); err != nil {
			t.Fatalf("no member_removed within 3s of the FIN: %v", err)
		}
		if m.Event == "pusher_internal:member_removed" {
			if !strings.Contains(m.Data, "victim") {
				t.Fatalf("member_removed for %s", m.Data)
			}
			break
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("member_removed came %v after the FIN, want under 1s", el)
	}
}
