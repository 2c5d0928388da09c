package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"

	gorilla "github.com/gorilla/websocket"
)

// readUntilClose reads frames until a close frame and returns its code.
func readUntilClose(r io.Reader) (code int, pings int, err error) {
	for {
		_, op, p, err := readFrame(r)
		if err != nil {
			return 0, pings, err
		}
		switch op {
		case 0x9:
			pings++
		case 0x8:
			if len(p) >= 2 {
				return int(binary.BigEndian.Uint16(p)), pings, nil
			}
			return 1005, pings, nil
		}
	}
}

// TestSlowlorisDoesNotStallHonestTraffic: 2,000 clients that stall half-way
// through a handshake or a frame cost no worker; honest members still get
// every message promptly.
func TestSlowlorisDoesNotStallHonestTraffic(t *testing.T) {
	s := newTestServer(t, Config{})
	addr := s.Addr().String()
	const attackers = 2000
	var attackConns []net.Conn
	defer func() {
		for _, c := range attackConns {
			c.Close()
		}
	}()
	for i := 0; i < attackers; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("attacker %d: %v", i, err)
		}
		attackConns = append(attackConns, c)
		if i%2 == 0 {
			// Half a request head, then silence.
			io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websock")
			continue
		}
		if _, err := testutil.Upgrade(c, addr, "/chat/honest", 0); err != nil {
			t.Fatalf("attacker upgrade: %v", err)
		}
		// A header announcing 1000 bytes, then 10 of them.
		f := testutil.Frame(true, 0, opText, true, []byte(strings.Repeat("x", 1000)))
		c.Write(f[:18])
	}
	waitConns(t, s, attackers/2)

	const members, msgs = 5, 200
	conns := make([]*gorilla.Conn, members)
	for i := range conns {
		conns[i] = dialPeer(t, s, "honest")
	}
	waitConns(t, s, attackers/2+members)
	var wg sync.WaitGroup
	var worst atomic.Int64
	errs := make(chan error, members)
	for i := 1; i < members; i++ {
		wg.Add(1)
		go func(c *gorilla.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			for n := 0; n < msgs; n++ {
				_, d, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("honest member lost messages after %d: %v", n, err)
					return
				}
				var sent int64
				fmt.Sscanf(string(d), "%d", &sent)
				if lat := time.Now().UnixNano() - sent; lat > worst.Load() {
					worst.Store(lat)
				}
			}
		}(conns[i])
	}
	for n := 0; n < msgs; n++ {
		if err := conns[0].WriteMessage(gorilla.TextMessage, []byte(fmt.Sprint(time.Now().UnixNano()))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if w := time.Duration(worst.Load()); w > 2*time.Second {
		t.Fatalf("worst honest latency %v with slowloris attackers", w)
	}
	// The attackers really stalled and are still held (cheaply).
	if got := s.Sockets(); got < attackers {
		t.Fatalf("server holds %d sockets, want >= %d (attackers dropped?)", got, attackers)
	}
}

// TestSlowConsumerIsClosed: a member that stops reading is closed with 1008
// once its queue passes WriteQueue; everyone else gets every message.
func TestSlowConsumerIsClosed(t *testing.T) {
	s := newTestServer(t, Config{WriteQueue: 64 << 10})
	addr := s.Addr().String()

	// The stalled member: tiny receive buffer, never reads.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	stalled, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	sbr, err := testutil.Upgrade(stalled, addr, "/chat/slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	const members = 3
	conns := make([]*gorilla.Conn, members)
	for i := range conns {
		conns[i] = dialPeer(t, s, "slow")
	}
	waitConns(t, s, members+1)

	const msgs = 6000
	payload := strings.Repeat("p", 1000)
	var wg sync.WaitGroup
	errs := make(chan error, members)
	for i := 1; i < members; i++ {
		wg.Add(1)
		go func(c *gorilla.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			for n := 0; n < msgs; n++ {
				_, d, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("honest member got %d of %d: %v", n, msgs, err)
					return
				}
				if want := fmt.Sprintf("%05d", n); !strings.HasPrefix(string(d), want) {
					errs <- fmt.Errorf("message %d out of order: %.5s", n, d)
					return
				}
			}
		}(conns[i])
	}
	for n := 0; n < msgs; n++ {
		if err := conns[0].WriteMessage(gorilla.TextMessage, []byte(fmt.Sprintf("%05d", n)+payload)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := s.Stats().SlowConsumers.Load(); n < 1 {
			return fmt.Errorf("slow consumers counted: %d", n)
		}
		if got := s.Conns(); got != members {
			return fmt.Errorf("%d connections, want %d (the stalled one closed)", got, members)
		}
		return nil
	})
	// Drain what the stalled member was sent: it ends with close 1008 (or the
	// socket was cut after the linger period).
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, _, err := readUntilClose(sbr)
	if err == nil && code != 1008 {
		t.Fatalf("stalled member closed with %d, want 1008", code)
	}
}

// TestPanicClosesOnlyThatConnection: a panic while handling one message
// closes that connection with 1011; the server and the others live on.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	s := newTestServer(t, Config{testHookMessage: func(p []byte) {
		if string(p) == "panic please" {
			panic("injected")
		}
	}})
	bad, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	a, _, _ := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	defer a.Close()
	b, _, _ := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	defer b.Close()
	waitConns(t, s, 3)
	bad.WriteMessage(gorilla.TextMessage, []byte("panic please"))
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = bad.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("panicking connection got %v, want close 1011", err)
	}
	if err := a.WriteMessage(gorilla.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, d, err := b.ReadMessage(); err != nil || string(d) != "still here" {
		t.Fatalf("b got %q %v", d, err)
	}
	if s.Stats().Panics.Load() != 1 {
		t.Fatalf("panics counted: %d", s.Stats().Panics.Load())
	}
}

// TestPingAndIdleTimeout: silent connections are pinged; one that never
// answers is closed after IdleTimeout; one that answers stays.
func TestPingAndIdleTimeout(t *testing.T) {
	s := newTestServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 500 * time.Millisecond})
	addr := s.Addr().String()
	mute := dialRaw(t, s)
	br, err := testutil.Upgrade(mute, addr, "/chat", 0)
	if err != nil {
		t.Fatal(err)
	}
	alive, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alive.Close()
	var pongs atomic.Int32
	alive.SetPingHandler(func(data string) error {
		pongs.Add(1)
		return alive.WriteControl(gorilla.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	mute.SetReadDeadline(time.Now().Add(5 * time.Second))
	code, pings, err := readUntilClose(br)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); code != 1001 || pings < 1 || el < 400*time.Millisecond {
		t.Fatalf("mute client: close %d after %d pings and %v", code, pings, el)
	}
	mute.Close()
	time.Sleep(300 * time.Millisecond)
	testutil.CheckFor(t, 3*time.Second, func() error {
		if s.Conns() != 1 || pongs.Load() < 2 {
			return fmt.Errorf("answering client: conns=%d pongs=%d", s.Conns(), pongs.Load())
		}
		return nil
	})
}

// TestShutdownSendsGoingAway: Shutdown sends 1001 to everyone and returns
// once they are closed.
func TestShutdownSendsGoingAway(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []*gorilla.Conn
	for i := 0; i < 20; i++ {
		c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	waitConns(t, s, 20)
	codes := make(chan int, len(conns))
	for _, c := range conns {
		go func(c *gorilla.Conn) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := c.ReadMessage()
			var ce *gorilla.CloseError
			if errors.As(err, &ce) {
				codes <- ce.Code
				return
			}
			codes <- -1
		}(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range conns {
		if code := <-codes; code != 1001 {
			t.Fatalf("client got close %d, want 1001", code)
		}
	}
	if s.Sockets() != 0 {
		t.Fatalf("%d sockets left after Shutdown", s.Sockets())
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Shutdown took %v with cooperative clients", el)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after Shutdown")
	}
}

// TestGoroutinesDoNotGrowWithConnections: 5,000 connections leave the
// goroutine count where 10 left it.
func TestGoroutinesDoNotGrowWithConnections(t *testing.T) {
	s := newTestServer(t, Config{})
	addr := s.Addr().String()
	open := func(n int) []net.Conn {
		var cs []net.Conn
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := testutil.Upgrade(c, addr, "/chat", 0); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	few := open(10)
	defer func() {
		for _, c := range few {
			c.Close()
		}
	}()
	waitConns(t, s, 10)
	runtime.GC()
	g10 := runtime.NumGoroutine()
	many := open(4990)
	defer func() {
		for _, c := range many {
			c.Close()
		}
	}()
	waitConns(t, s, 5000)
	g5000 := runtime.NumGoroutine()
	if g5000 > g10+3 {
		t.Fatalf("goroutines: %d with 10 connections, %d with 5000", g10, g5000)
	}
	t.Logf("goroutines: %d with 10 connections, %d with 5000", g10, g5000)
}
