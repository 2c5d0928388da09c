package hub

import (
	"errors"
	"net"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

func dial(t *testing.T, base, path string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+strings.TrimPrefix(base, "http://")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBroadcastToOthersVerbatim(t *testing.T) {
	srv := httptest.NewServer(New(Config{}))
	defer srv.Close()
	a := dial(t, srv.URL, "/chat/r1")
	b := dial(t, srv.URL, "/chat/r1")
	other := dial(t, srv.URL, "/chat/r2")
	lobby := dial(t, srv.URL, "/chat")

	type msg struct {
		op int
		p  []byte
	}
	bq := make(chan []byte, 100)
	bm := make(chan msg, 100)
	go func() {
		first := true
		for {
			op, p, err := b.ReadMessage()
			if err != nil {
				return
			}
			if first && string(p) == "sync" {
				first = false
				bq <- p
				continue
			}
			if string(p) != "sync" {
				bm <- msg{op, p}
			}
		}
	}()
	// Members join asynchronously after the upgrade: send until b sees it.
	testutil.CheckFor(t, 2*time.Second, func() error {
		if err := a.WriteMessage(websocket.TextMessage, []byte("sync")); err != nil {
			return err
		}
		// A gorilla read that times out breaks the connection, so wait
		// on b from a goroutine instead of using a deadline.
		select {
		case p := <-bq:
			if string(p) != "sync" {
				t.Fatalf("got %q", p)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("b has not received yet")
		}
	})
	if err := a.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bm:
		if m.op != websocket.BinaryMessage || string(m.p) != "\x00\x01\x02" {
			t.Fatalf("b got op %d %q", m.op, m.p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("b got nothing")
	}
	// Neither the sender, another room nor the lobby gets it.
	for name, conn := range map[string]*websocket.Conn{"sender": a, "other room": other, "lobby": lobby} {
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, p, err := conn.ReadMessage(); err == nil {
			t.Errorf("%s received %q", name, p)
		}
	}
}

func TestSlowMemberIsDropped(t *testing.T) {
	srv := httptest.NewServer(New(Config{SendBuffer: 4}))
	defer srv.Close()
	sender := dial(t, srv.URL, "/chat/slow")
	// A small receive buffer so that the kernel holds little for it.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}).DialContext}
	slow, _, err := d.Dial("ws://"+strings.TrimPrefix(srv.URL, "http://")+"/chat/slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// The slow member does not read while 8 MiB go by (more than the
	// server's socket buffer holds); the hub drops it and the write
	// goroutine, once unblocked, sends an empty close frame.
	msg := make([]byte, 32<<10)
	time.Sleep(50 * time.Millisecond) // the hub registers members asynchronously
	for i := 0; i < 256; i++ {
		if err := sender.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			n++
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("slow member ended with %v after %d messages, want an empty close frame", err, n)
		}
		if n >= 256 {
			t.Fatalf("slow member got all %d messages: it was never dropped", n)
		}
		return
	}
}
