package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// TestPusherActivityTimeout: a Pusher connection's timers follow its app's
// activity_timeout, not the raw ping interval: silent for activity_timeout,
// it gets pusher:ping; answering keeps it; never answering ends in 4201.
func TestPusherActivityTimeout(t *testing.T) {
	app := pusher.App{ID: "1", Key: "k", Secret: "s", ActivityTimeout: time.Second}
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Apps: apps, PingInterval: time.Minute, IdleTimeout: 2 * time.Minute})
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/k?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, m, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(m), "pusher:connection_established") || !strings.Contains(string(m), `activity_timeout\":1`) {
		t.Fatalf("connection_established: %s %v", m, err)
	}
	start := time.Now()
	_, m, err = c.ReadMessage()
	if err != nil || !strings.Contains(string(m), `"pusher:ping"`) {
		t.Fatalf("want pusher:ping after ~1s of silence, got %s %v", m, err)
	}
	if el := time.Since(start); el < 800*time.Millisecond || el > 3*time.Second {
		t.Fatalf("pusher:ping after %v, want about 1s", el)
	}
	if err := c.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:pong","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	// Answered: the next ping comes a second later; ignore it and wait for
	// the close after PongTimeout would be too slow here, so check only that
	// the connection is still open and pinged again.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, m, err = c.ReadMessage(); err != nil || !strings.Contains(string(m), `"pusher:ping"`) {
		t.Fatalf("second ping: %s %v", m, err)
	}
	if s.Conns() != 1 {
		t.Fatalf("connection closed after answering a ping")
	}
}

// TestPusherUnknownKeyClosedWith4001 checks the engine path of a refused
// Pusher connection: pusher:error, then close 4001, then the socket closes.
func TestPusherUnknownKeyClosedWith4001(t *testing.T) {
	s := newTestServer(t, Config{})
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/nope?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, m, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(m), "4001") {
		t.Fatalf("want pusher:error 4001, got %s %v", m, err)
	}
	_, _, err = c.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 {
		t.Fatalf("want close 4001, got %v", err)
	}
	waitConns(t, s, 0)
}

// TestPusherShutdownCloses4200: on graceful shutdown Pusher clients get
// 4200 (reconnect), never 4009.
func TestPusherShutdownCloses4200(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	_, _, err = c.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != 4200 {
		t.Fatalf("want close 4200, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
