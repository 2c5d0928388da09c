package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	gorilla "github.com/gorilla/websocket"
)

// Tests of what a hostile or broken client does, over real sockets: each
// reproduces a defect found from the outside and fails without its fix.

// closeWrite half-closes a client socket: the server reads EOF after
// whatever was written before it.
func closeWrite(t testing.TB, c net.Conn) {
	t.Helper()
	if rc, ok := c.(*testutil.UpgradedConn); ok {
		c = rc.Conn
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("shutdown(SHUT_WR): %v", err)
	}
}

// waitSockets waits until the server owns n sockets.
func waitSockets(t testing.TB, s *Server, n int, timeout time.Duration) {
	t.Helper()
	testutil.CheckFor(t, timeout, func() error {
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
		writeBytes(t, c, testutil.Frame(true, 0, opText, true, msg))
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

// readResponse reads one HTTP response from br within ioWait.
func readResponse(t testing.TB, c net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, string(body)
}

// stalledBody opens a connection that sends a request head announcing a
// body and then nothing.
func stalledBody(t testing.TB, s *Server) net.Conn {
	t.Helper()
	c := dialRaw(t, s)
	writeBytes(t, c, []byte("POST /pusher/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"))
	return c
}

// TestHTTPStalledBodyTimesOut: a plain HTTP request whose body never comes
// is counted as a socket while it lasts and ended within the handshake
// timeout (the whole request must arrive in that time).
func TestHTTPStalledBodyTimesOut(t *testing.T) {
	s := newTestServer(t, Config{HandshakeTimeout: time.Second})
	c := stalledBody(t, s)
	waitSockets(t, s, 1, ioWait)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the server did not end the stalled request: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("stalled request ended after %v, want about 1s", el)
	}
	waitSockets(t, s, 0, ioWait)
}

// TestHTTPIdleKeepAliveClosed: a kept-alive HTTP connection that sends
// nothing more is closed after the handshake timeout.
func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	s := newTestServer(t, Config{HandshakeTimeout: time.Second})
	c := dialRaw(t, s)
	br := bufio.NewReader(c)
	writeBytes(t, c, []byte("GET /raw HTTP/1.1\r\nHost: x\r\n\r\n"))
	if resp, _ := readResponse(t, c, br); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /raw: %s", resp.Status)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("idle keep-alive connection not closed: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("idle keep-alive connection closed after %v, want about 1s", el)
	}
}

// TestHTTPConnsCannotStarveUpgradesOrHealthz: plain HTTP connections are
// capped; over the cap a request gets 503 at once, while /healthz and
// WebSocket upgrades are still served.
func TestHTTPConnsCannotStarveUpgradesOrHealthz(t *testing.T) {
	s := newTestServer(t, Config{MaxHTTPConns: 8, HandshakeTimeout: 5 * time.Second})
	for i := 0; i < 20; i++ {
		stalledBody(t, s)
	}
	waitSockets(t, s, 20, ioWait)
	for i := 0; i < 5; i++ {
		if resp, body := httpGet(t, s, "/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
			t.Fatalf("GET /healthz: %s %q", resp.Status, body)
		}
	}
	if resp, _ := httpGet(t, s, "/raw"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET /raw over the HTTP cap: %s, want 503", resp.Status)
	}
	peer := dialPeer(t, s, "starve")
	other := dialPeer(t, s, "starve")
	waitMembers(t, s, "starve", 2)
	if err := other.WriteMessage(gorilla.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, peer, gorilla.TextMessage, []byte("still here"))
	if got := s.httpConns.Load(); got != 8 {
		t.Fatalf("%d plain HTTP connections held, want the cap of 8", got)
	}
}

// TestHandshakeDuplicateKey: RFC 6455 11.3.1, Sec-WebSocket-Key "MUST NOT
// appear more than once in an HTTP request".
func TestHandshakeDuplicateKey(t *testing.T) {
	s := newTestServer(t, Config{})
	head := handshakeHead(s, "GET", "/chat", nil)
	head = strings.Replace(head, "\r\n\r\n", "\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n", 1)
	expectStatus(t, s, head, http.StatusBadRequest)
}

// TestHandshakeAbsoluteForm: RFC 9112 3.2.2, "a server MUST accept the
// absolute-form in requests".
func TestHandshakeAbsoluteForm(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "abs")
	head := handshakeHead(s, "GET", "http://"+s.Addr().String()+"/chat/abs?x=1", nil)
	resp, c, br := roundTrip(t, s, head)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("absolute-form upgrade: %s, want 101", resp.Status)
	}
	rc := &testutil.UpgradedConn{Conn: c, Reader: br}
	writeBytes(t, rc, testutil.Frame(true, 0, opText, true, []byte("absolute")))
	expectMessage(t, peer, gorilla.TextMessage, []byte("absolute"))
}

// TestUpgradeOnKeptAliveConnection: a valid upgrade that follows a plain
// request on the same kept-alive connection is upgraded.
func TestUpgradeOnKeptAliveConnection(t *testing.T) {
	for _, first := range []string{"/healthz", "/raw"} {
		t.Run(first, func(t *testing.T) {
			s := newTestServer(t, Config{})
			peer := dialPeer(t, s, "ka")
			waitMembers(t, s, "ka", 1)
			c := dialRaw(t, s)
			br := bufio.NewReader(c)
			writeBytes(t, c, []byte("GET "+first+" HTTP/1.1\r\nHost: x\r\n\r\n"))
			if resp, _ := readResponse(t, c, br); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", first, resp.Status)
			}
			writeBytes(t, c, []byte(handshakeHead(s, "GET", "/chat/ka", nil)))
			c.SetReadDeadline(time.Now().Add(ioWait))
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade after GET %s: %v %v, want 101", first, resp, err)
			}
			if got := resp.Header.Get("Sec-WebSocket-Accept"); got != testutil.SampleAccept {
				t.Fatalf("Sec-WebSocket-Accept = %q", got)
			}
			rc := &testutil.UpgradedConn{Conn: c, Reader: br}
			writeBytes(t, rc, testutil.Frame(true, 0, opText, true, []byte("kept alive")))
			expectMessage(t, peer, gorilla.TextMessage, []byte("kept alive"))
			if err := peer.WriteMessage(gorilla.TextMessage, []byte("back")); err != nil {
				t.Fatal(err)
			}
			if _, op, p := mustReadFrame(t, rc); op != opText || string(p) != "back" {
				t.Fatalf("got op=%#x %q, want text \"back\"", op, p)
			}
		})
	}
}

// TestHeadWithBareLF: RFC 9112 2.2, a recipient MAY recognize a single LF
// as a line terminator. A head that ends in bare LFs is answered (as
// net/http answers it), never left to time out in silence.
func TestHeadWithBareLF(t *testing.T) {
	s := newTestServer(t, Config{HandshakeTimeout: 5 * time.Second})
	up := strings.ReplaceAll(handshakeHead(s, "GET", "/chat", nil), "\r\n", "\n")
	resp, _, _ := roundTrip(t, s, up)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade with bare LF: %s, want 101", resp.Status)
	}
	resp, _, _ = roundTrip(t, s, "GET /raw HTTP/1.1\nHost: x\n\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /raw with bare LF: %s, want 200", resp.Status)
	}
}

// dialSmallBuffers dials s with the given SO_RCVBUF / SO_SNDBUF (0: the
// kernel's default), so that the kernel holds little of what a test wants
// the server to queue.
func dialSmallBuffers(t testing.TB, s *Server, rcvbuf, sndbuf int) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			if rcvbuf > 0 {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}
			if sndbuf > 0 {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, sndbuf)
			}
		})
	}}
	c, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowConsumerGetsItsCloseFrame: a member that reads, but more slowly
// than its room sends, is closed as a slow consumer, and its close frame
// (1008) goes out ahead of its queued backlog: it gets the frame after what
// the kernel already holds, never a bare EOF.
func TestSlowConsumerGetsItsCloseFrame(t *testing.T) {
	s := newTestServer(t, Config{WriteQueue: 64 << 10})
	slow := dialSmallBuffers(t, s, 0, 0)
	br, err := testutil.Upgrade(slow, s.Addr().String(), "/chat/slowread", 0)
	if err != nil {
		t.Fatal(err)
	}
	sender := dialPeer(t, s, "slowread")
	waitMembers(t, s, "slowread", 2)

	// The member reads about 200 KB/s ...
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4<<10)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := br.Read(buf); err != nil {
				return
			}
		}
	}()
	// ... while the room sends much faster.
	payload := []byte(strings.Repeat("x", 16<<10))
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().SlowConsumers.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow member was never counted as a slow consumer")
		}
		sender.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if err := sender.WriteMessage(gorilla.BinaryMessage, payload); err != nil && !isTimeout(err) {
			t.Fatal(err)
		}
	}
	// Slow reading goes on past the linger period; then the member reads
	// what is left as fast as it can and must find the close frame.
	time.Sleep(3 * time.Second)
	close(stop)
	<-readerDone
	slow.SetReadDeadline(time.Now().Add(30 * time.Second))
	// The slow reader may have stopped mid-frame: resynchronise on nothing,
	// just scan the rest of the stream for a close frame header at a frame
	// boundary by reading frames from where the reader left off is not
	// possible, so look for the close frame bytes 0x88 0x0f 0x03 0xf0
	// ("slow consumer" reason, code 1008) in the remaining bytes.
	rest, err := io.ReadAll(br)
	if err != nil && !isTimeout(err) {
		t.Logf("reading the rest: %v", err)
	}
	closeFrame := append([]byte{0x88, byte(2 + len("slow consumer")), 0x03, 0xf0}, "slow consumer"...)
	if !bytes.HasSuffix(rest, closeFrame) {
		t.Fatalf("the slow consumer's stream (%d more bytes) does not end with close 1008 \"slow consumer\"; last bytes %q",
			len(rest), rest[max(0, len(rest)-32):])
	}
}

// TestShutdownDrainsQueuedMessages: with a long -drain-timeout, queued
// messages keep flowing to a member that resumes reading late, and 1001
// follows them; no fixed linger cuts the drain short.
func TestShutdownDrainsQueuedMessages(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", DrainTimeout: 15 * time.Second, WriteQueue: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	late := dialSmallBuffers(t, s, 4096, 0)
	br, err := testutil.Upgrade(late, s.Addr().String(), "/chat/drain", 0)
	if err != nil {
		t.Fatal(err)
	}
	sender := dialPeer(t, s, "drain")
	witness := dialPeer(t, s, "drain")
	waitMembers(t, s, "drain", 3)
	const n = 340
	payload := strings.Repeat("d", 10<<10)
	go func() {
		for i := 0; i < n; i++ {
			if sender.WriteMessage(gorilla.TextMessage, []byte(fmt.Sprintf("%04d%s", i, payload))) != nil {
				return
			}
		}
	}()
	// When the witness has all of them, the late member's are queued.
	witness.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		if _, _, err := witness.ReadMessage(); err != nil {
			t.Fatalf("witness got %d of %d: %v", i, n, err)
		}
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Shutdown(context.Background()) }()
	time.Sleep(3 * time.Second)
	late.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		_, op, p, err := readFrame(br)
		if err != nil {
			t.Fatalf("late member got %d of %d queued messages: %v", i, n, err)
		}
		if op != opText || string(p[:4]) != fmt.Sprintf("%04d", i) {
			t.Fatalf("message %d: op %#x %.8q", i, op, p)
		}
	}
	if code, _, err := readUntilClose(br); err != nil || code != 1001 {
		t.Fatalf("after the queued messages: close %d, %v; want 1001", code, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("Shutdown took %v; the drain had finished long before", el)
	}
}

// TestFloodingProducerDoesNotEvictReaders: one raw client writing tiny
// frames as fast as its socket allows must not turn members that read as
// fast as they can into slow consumers: the producer is read more slowly
// (backpressure), and every member gets every message it accepted, in
// order. The members are gorilla clients (a real library's per-message
// cost) with small receive buffers, so the kernel hides little of a
// backlog.
func TestFloodingProducerDoesNotEvictReaders(t *testing.T) {
	const (
		members      = 20
		floodPayload = 8
		floodFor     = time.Second
	)
	s := newTestServer(t, Config{})
	type result struct {
		got int
		err error
	}
	results := make(chan result, members)
	var expected atomic.Int64
	expected.Store(-1)
	dialer := gorilla.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return dialSmallBuffers(t, s, 16<<10, 0), nil }}
	for i := 0; i < members; i++ {
		g, _, err := dialer.Dial(wsURL(s, "/chat/flood"), nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			g.SetReadDeadline(time.Now().Add(90 * time.Second))
			got := 0
			for {
				if want := expected.Load(); want >= 0 && int64(got) == want {
					results <- result{got, nil}
					return
				}
				typ, p, err := g.ReadMessage()
				if err != nil {
					results <- result{got, err}
					return
				}
				if typ != gorilla.BinaryMessage || binary.BigEndian.Uint32(p) != uint32(got) {
					results <- result{got, fmt.Errorf("message %d: type %d %x", got, typ, p)}
					return
				}
				got++
			}
		}()
	}
	waitMembers(t, s, "flood", members)
	flood := dialSmallBuffers(t, s, 0, 0)
	if _, err := testutil.Upgrade(flood, s.Addr().String(), "/chat/flood", 0); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, flood)
	// Numbered frames of floodPayload bytes, written for floodFor.
	const per = 2 + 4 + floodPayload
	buf := make([]byte, 0, 4096*per)
	seq := uint32(0)
	written := 0
	end := time.Now().Add(floodFor)
	for time.Now().Before(end) {
		buf = buf[:0]
		for i := 0; i < 4096; i++ {
			var p [floodPayload]byte
			binary.BigEndian.PutUint32(p[:], seq+uint32(i))
			buf = append(buf, testutil.Frame(true, 0, opBinary, true, p[:])...)
		}
		flood.SetWriteDeadline(end)
		n, err := flood.Write(buf)
		written += n
		seq += 4096
		if err != nil {
			break
		}
	}
	expected.Store(int64(written / per))
	t.Logf("the flooder got %d messages accepted in %v", written/per, floodFor)
	for i := 0; i < members; i++ {
		if r := <-results; r.err != nil || int64(r.got) != expected.Load() {
			t.Fatalf("a reader got %d of %d messages: %v (slow consumers: %d)", r.got, expected.Load(), r.err, s.Stats().SlowConsumers.Load())
		}
	}
	if n := s.Stats().SlowConsumers.Load(); n != 0 {
		t.Fatalf("%d honest readers closed as slow consumers", n)
	}
}
