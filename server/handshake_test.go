package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	gorilla "github.com/gorilla/websocket"
)

// End-to-end tests of the opening handshake (RFC 6455 4.2) and of the plain
// HTTP endpoints that share the port, over real sockets.

// handshakeHead builds a request head: a valid upgrade for path, with
// edit's entries set on top (an empty value removes the header). Headers
// come out in a fixed order.
func handshakeHead(s *Server, method, path string, edit map[string]string) string {
	hdr := map[string]string{
		"Host":                  s.Addr().String(),
		"Upgrade":               "websocket",
		"Connection":            "Upgrade",
		"Sec-WebSocket-Key":     testutil.SampleKey,
		"Sec-WebSocket-Version": "13",
	}
	for k, v := range edit {
		if v == "" {
			delete(hdr, k)
		} else {
			hdr[k] = v
		}
	}
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(method + " " + path + " HTTP/1.1\r\n")
	for _, k := range keys {
		b.WriteString(k + ": " + hdr[k] + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// roundTrip sends a request head on a new connection and reads the
// response head. The connection and its reader are returned for more checks.
func roundTrip(t testing.TB, s *Server, head string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialRaw(t, s)
	c.SetDeadline(time.Now().Add(ioWait))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return resp, c, br
}

// expectStatus sends head and requires status code want. A refused
// handshake must also end the connection.
func expectStatus(t testing.TB, s *Server, head string, want int) *http.Response {
	t.Helper()
	resp, c, br := roundTrip(t, s, head)
	if resp.StatusCode != want {
		t.Fatalf("got %s, want %d", resp.Status, want)
	}
	if want != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		expectEOF(t, &testutil.UpgradedConn{Conn: c, Reader: br})
	}
	return resp
}

// TestHandshakeValid: a valid upgrade gets 101 with the accept value of
// RFC 6455 4.2.2 and the Upgrade/Connection headers.
func TestHandshakeValid(t *testing.T) {
	s := newTestServer(t, Config{})
	resp := expectStatus(t, s, handshakeHead(s, "GET", "/chat", nil), http.StatusSwitchingProtocols)
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != testutil.SampleAccept {
		t.Errorf("Sec-WebSocket-Accept = %q, want %q", got, testutil.SampleAccept)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
		t.Errorf("Upgrade = %q, want websocket", got)
	}
	if got := resp.Header.Get("Connection"); !strings.EqualFold(got, "upgrade") {
		t.Errorf("Connection = %q, want Upgrade", got)
	}
}

// TestHandshakeMissingKey: no Sec-WebSocket-Key is a bad request (4.2.1).
func TestHandshakeMissingKey(t *testing.T) {
	s := newTestServer(t, Config{})
	expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Sec-WebSocket-Key": ""}), http.StatusBadRequest)
}

// TestHandshakeInvalidKey: the key "when decoded, is 16 bytes in length"
// (4.1, 4.2.1); anything else is 400.
func TestHandshakeInvalidKey(t *testing.T) {
	s := newTestServer(t, Config{})
	for name, key := range map[string]string{
		"too short":          "abc",
		"24 chars not b64":   "!!!!!!!!!!!!!!!!!!!!!!!!",
		"24 chars, 18 bytes": "AAAAAAAAAAAAAAAAAAAAAAAA",
		"24 chars, 17 bytes": "AAAAAAAAAAAAAAAAAAAAAAA=",
		"16 bytes, too long": testutil.SampleKey + "AAAA",
		"bad padding":        "dGhlIHNhbXBsZSBub25jZQ=A",
	} {
		t.Run(name, func(t *testing.T) {
			expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Sec-WebSocket-Key": key}), http.StatusBadRequest)
		})
	}
}

// TestHandshakeBadVersion: "If this version does not match a version
// understood by the server, the server MUST abort the WebSocket handshake
// ... and instead send an appropriate HTTP error code (such as 426 Upgrade
// Required) and a |Sec-WebSocket-Version| header field indicating the
// version(s) the server is capable of understanding" (4.2.2, 4.4).
func TestHandshakeBadVersion(t *testing.T) {
	s := newTestServer(t, Config{})
	resp := expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Sec-WebSocket-Version": "12"}), http.StatusUpgradeRequired)
	if got := resp.Header.Values("Sec-WebSocket-Version"); len(got) != 1 || strings.TrimSpace(got[0]) != "13" {
		t.Fatalf("Sec-WebSocket-Version response header = %q, want 13", got)
	}
}

// TestHandshakeMethodNotAllowed: the opening handshake "MUST be a valid
// HTTP request" with "The method of the request MUST be GET" (4.1).
func TestHandshakeMethodNotAllowed(t *testing.T) {
	s := newTestServer(t, Config{})
	expectStatus(t, s, handshakeHead(s, "POST", "/chat", nil), http.StatusMethodNotAllowed)
}

// TestHandshakeHeadTooLarge: a request head over 8 KiB gets 431.
func TestHandshakeHeadTooLarge(t *testing.T) {
	s := newTestServer(t, Config{})
	head := handshakeHead(s, "GET", "/chat", map[string]string{"X-Pad": strings.Repeat("p", 9000)})
	resp, _, _ := roundTrip(t, s, head)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("got %s, want 431", resp.Status)
	}
}

// TestHandshakeTimeout: a client that sends half a request head and stalls
// is dropped once Config.HandshakeTimeout passes.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := newTestServer(t, Config{HandshakeTimeout: timeout})
	c := dialRaw(t, s)
	start := time.Now()
	if _, err := io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: webso"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf [256]byte
	n, err := c.Read(buf[:])
	elapsed := time.Since(start)
	if n > 0 {
		t.Fatalf("server sent %q to a stalled handshake; want the socket closed", buf[:n])
	}
	if isTimeout(err) {
		t.Fatalf("socket still open after 5s (HandshakeTimeout %v)", timeout)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want EOF or connection reset", err)
	}
	// The wheel checks at a tick granularity (timeout/8 here), so allow a
	// little early and well late.
	if elapsed < timeout-100*time.Millisecond || elapsed > 2*time.Second {
		t.Fatalf("closed after %v, want about %v (between %v and 2s)", elapsed, timeout, timeout-100*time.Millisecond)
	}
	t.Logf("stalled handshake closed after %v", elapsed)
}

// TestHandshakeOrigin: with AllowedOrigins set, another Origin gets 403
// (RFC 6455 4.2.2 allows "an appropriate HTTP error code (such as 403
// Forbidden)"); a listed one is accepted.
func TestHandshakeOrigin(t *testing.T) {
	s := newTestServer(t, Config{AllowedOrigins: []string{"http://good.example"}})
	t.Run("disallowed", func(t *testing.T) {
		expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Origin": "http://evil.example"}), http.StatusForbidden)
	})
	t.Run("allowed", func(t *testing.T) {
		expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Origin": "http://good.example"}), http.StatusSwitchingProtocols)
	})
	t.Run("allowed, gorilla", func(t *testing.T) {
		g, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), http.Header{"Origin": {"http://good.example"}})
		if err != nil {
			t.Fatal(err)
		}
		g.Close()
	})
	t.Run("disallowed, gorilla", func(t *testing.T) {
		_, resp, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), http.Header{"Origin": {"http://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got err=%v resp=%v, want 403", err, resp)
		}
	})
}

// TestHandshakeAnyOrigin: without AllowedOrigins every origin is accepted.
func TestHandshakeAnyOrigin(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, o := range []string{"http://evil.example", "null", "https://x.test:8443"} {
		expectStatus(t, s, handshakeHead(s, "GET", "/chat", map[string]string{"Origin": o}), http.StatusSwitchingProtocols)
	}
}

// TestHandshakeRoomNames: a room name is 1-64 characters of
// [A-Za-z0-9._-]; other names are 400.
func TestHandshakeRoomNames(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, path := range []string{
		"/chat/bad!name",
		"/chat/" + strings.Repeat("r", 65),
		"/chat/",
		"/chat/a/b",
		"/chat/sp%20ace",
		"/chat/caf\xc3\xa9",
	} {
		t.Run("bad "+path, func(t *testing.T) {
			expectStatus(t, s, handshakeHead(s, "GET", path, nil), http.StatusBadRequest)
		})
	}
	for _, path := range []string{
		"/chat/a",
		"/chat/" + strings.Repeat("r", 64),
		"/chat/x.Y_z-9",
		"/chat/room?query=1",
	} {
		t.Run("good "+path, func(t *testing.T) {
			expectStatus(t, s, handshakeHead(s, "GET", path, nil), http.StatusSwitchingProtocols)
		})
	}
}

// TestHandshakeUnknownPath: an upgrade for a path nobody serves is 404.
func TestHandshakeUnknownPath(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, path := range []string{"/nope", "/nope/deeper", "/chatroom", "/"} {
		t.Run(path, func(t *testing.T) {
			expectStatus(t, s, handshakeHead(s, "GET", path, nil), http.StatusNotFound)
		})
	}
}

// TestHandshakeMaxConns: past MaxConns an upgrade gets 503; once a
// connection leaves, a new one is accepted again.
func TestHandshakeMaxConns(t *testing.T) {
	s := newTestServer(t, Config{MaxConns: 2})
	a := dialPeer(t, s, "")
	dialPeer(t, s, "")
	waitConns(t, s, 2)

	_, resp, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third upgrade: err=%v resp=%v, want 503", err, resp)
	}
	expectStatus(t, s, handshakeHead(s, "GET", "/chat", nil), http.StatusServiceUnavailable)

	a.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
	a.Close()
	testutil.CheckFor(t, 5*time.Second, func() error {
		g, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
		if err != nil {
			return err
		}
		g.Close()
		return nil
	})
}

// httpGet fetches path with a plain HTTP client.
func httpGet(t testing.TB, s *Server, path string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Timeout: ioWait, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + s.Addr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp, string(body)
}

// TestHTTPIndexPage: GET /raw serves the seed's chat page (GET / is the
// Pusher chat app).
func TestHTTPIndexPage(t *testing.T) {
	s := newTestServer(t, Config{})
	resp, body := httpGet(t, s, "/raw")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /raw: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q, want text/html", ct)
	}
	if !strings.Contains(body, "new WebSocket(") {
		t.Fatalf("page does not open a WebSocket: %.200q", body)
	}
}

// TestHTTPHealthz: GET /healthz is 200.
func TestHTTPHealthz(t *testing.T) {
	s := newTestServer(t, Config{})
	if resp, _ := httpGet(t, s, "/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
}

// TestHTTPChatWithoutUpgrade: a plain GET of a WebSocket endpoint is 426
// Upgrade Required.
func TestHTTPChatWithoutUpgrade(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, path := range []string{"/chat", "/chat/room"} {
		resp, _ := httpGet(t, s, path)
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("GET %s: %s, want 426", path, resp.Status)
		}
	}
}

// TestHandshakePipelinedFrame: a client that sends its handshake and its
// first frame in one write gets that frame delivered.
func TestHandshakePipelinedFrame(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "pipe")
	waitMembers(t, s, "pipe", 1)
	c := dialRaw(t, s)
	req := []byte(handshakeHead(s, "GET", "/chat/pipe", nil))
	req = append(req, testutil.Frame(true, 0, opText, true, []byte("first words"))...)
	req = append(req, testutil.Frame(true, 0, opPing, true, []byte("pipelined ping"))...)
	writeBytes(t, c, req)
	rc, err := testutil.ReadUpgrade(c, ioWait)
	if err != nil {
		t.Fatal(err)
	}
	expectMessage(t, peer, gorilla.TextMessage, []byte("first words"))
	if _, op, got := mustReadFrame(t, rc); op != opPong || string(got) != "pipelined ping" {
		t.Fatalf("got op=%#x %q, want pong \"pipelined ping\"", op, got)
	}
}
