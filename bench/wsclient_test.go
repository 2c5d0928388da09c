package bench

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// newEchoServer is an independent WebSocket server (gorilla) that echoes
// every message, pings first when asked, and closes with 4001 on "bye".
func newEchoServer(t *testing.T) string {
	t.Helper()
	up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/chat/") {
			http.NotFound(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		// The pong handler runs inside ReadMessage, on this goroutine,
		// the only writer.
		c.SetPongHandler(func(s string) error { return c.WriteMessage(websocket.TextMessage, []byte("pong "+s)) })
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch string(p) {
			case "bye":
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
				_, _, _ = c.ReadMessage()
				return
			case "ping me":
				_ = c.WriteMessage(websocket.PingMessage, []byte("x1"))
				continue
			}
			if err := c.WriteMessage(op, p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestClientAgainstGorilla(t *testing.T) {
	addr := newEchoServer(t)
	c, err := Dial(context.Background(), DialOptions{Addr: addr, Path: "/chat/x", Timeout: 2 * time.Second, ReadBuf: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("0123456789"), 7000) // 70 kB: gorilla fragments it, we read it past the buffer
	for _, m := range []struct {
		op   byte
		data []byte
	}{{OpText, []byte("hello")}, {OpBinary, []byte{0, 1, 2, 255}}, {OpText, big[:200]}, {OpBinary, big}, {OpText, nil}} {
		if err := c.WriteMessage(m.op, m.data); err != nil {
			t.Fatal(err)
		}
		op, p, err := c.ReadMessage()
		if err != nil || op != m.op || !bytes.Equal(p, m.data) {
			t.Fatalf("echo of %d bytes (op %d): got op %d, %d bytes, %v", len(m.data), m.op, op, len(p), err)
		}
	}
	if err := c.WriteMessage(OpText, []byte("ping me")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "pong x1" {
		t.Fatalf("ping was not answered: %q, %v", p, err)
	}
	if err := c.WriteMessage(OpText, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ReadMessage()
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "bye" {
		t.Fatalf("want close 4001 bye, got %v", err)
	}
}

func TestClientHandshakeErrors(t *testing.T) {
	addr := newEchoServer(t)
	_, err := Dial(context.Background(), DialOptions{Addr: addr, Path: "/nope", Timeout: 2 * time.Second})
	if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("want a handshake error naming 404, got %v", err)
	}
	if got := classifyDialError(err); got != `handshake: "HTTP/1.1 404 Not Found"` {
		t.Errorf("classified as %q", got)
	}
	port, _ := freeLoopbackPort()
	_, err = Dial(context.Background(), DialOptions{Addr: "127.0.0.1:" + strconv.Itoa(port), Path: "/chat/x", Timeout: time.Second})
	if got := classifyDialError(err); got != "connection refused" {
		t.Errorf("closed port classified as %q (%v)", got, err)
	}
}

func TestMaskBytesMatchesRFC(t *testing.T) {
	key := uint32(0x37fa213d)
	k := []byte{0x37, 0xfa, 0x21, 0x3d}
	for n := 0; n < 40; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := bytes.Clone(b)
		for i := range want {
			want[i] ^= k[i%4] // RFC 6455 section 5.3: j = i MOD 4
		}
		maskBytes(b, key)
		if !bytes.Equal(b, want) {
			t.Fatalf("n=%d: masked %x, want %x", n, b, want)
		}
	}
	// The RFC's example: a masked "Hello" (section 5.7).
	frame := AppendClientFrame(nil, OpText, []byte("Hello"), key)
	if want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}; !bytes.Equal(frame, want) {
		t.Errorf("frame %x, want %x", frame, want)
	}
}
