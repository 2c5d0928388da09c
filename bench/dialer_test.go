package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// TestDialerRawSocket: a WebSocket to an IP literal goes through the raw
// socket path (one descriptor per connection, no dup), from the source
// address asked, and works as a client against an independent server
// (gorilla): messages both ways, then a reset the server sees.
func TestDialerRawSocket(t *testing.T) {
	addr := newEchoServer(t)
	fds0 := countOpenFDs(t)
	d := NewDialer(context.Background())
	defer d.Close()
	var conns []*Conn
	for i := 0; i < 20; i++ {
		c, err := d.Dial(DialOptions{Addr: addr, Path: "/chat/x", LocalIP: net.ParseIP("127.0.0.3"), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// The echo server's 20 accepted sockets live in this process too:
	// 20 dials add 40 descriptors (give or take the runtime's own).
	if got := countOpenFDs(t) - fds0; got < 40 || got > 42 {
		t.Errorf("20 connections (both ends in this process) added %d descriptors, want 40", got)
	}
	c := conns[0]
	if _, ok := c.NetConn().(*sockConn); !ok {
		t.Fatalf("dial to an IP literal used %T, not the raw socket", c.NetConn())
	}
	if la := c.NetConn().LocalAddr().(*net.TCPAddr); !la.IP.Equal(net.ParseIP("127.0.0.3")) || la.Port == 0 {
		t.Errorf("local address %v, want 127.0.0.3 and a port", la)
	}
	if ra := c.NetConn().RemoteAddr().String(); ra != addr {
		t.Errorf("remote address %s, want %s", ra, addr)
	}
	if err := c.WriteMessage(OpText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hello" {
		t.Fatalf("echo: %q, %v", p, err)
	}
	for _, c := range conns {
		if err := c.Abort(); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := countOpenFDs(t) - fds0; got > 2 {
			return fmt.Errorf("%d descriptors still open after Abort", got)
		}
		return nil
	})
}

// TestDialerHostName: a host name is resolved through net.Dialer.
func TestDialerHostName(t *testing.T) {
	addr := newEchoServer(t)
	_, port, _ := net.SplitHostPort(addr)
	c, err := Dial(context.Background(), DialOptions{Addr: "localhost:" + port, Path: "/chat/x", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.NetConn().(*net.TCPConn); !ok {
		t.Errorf("dial to a host name used %T", c.NetConn())
	}
}

// silentServer accepts TCP connections and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestDialerTimeoutAndCancel: against a server that never answers the
// upgrade, a dial ends at its timeout (classified "timeout"); cancelling
// the Dialer's context ends the dial in progress at once, and later dials
// fail without connecting.
func TestDialerTimeoutAndCancel(t *testing.T) {
	addr := silentServer(t)
	t0 := time.Now()
	_, err := Dial(context.Background(), DialOptions{Addr: addr, Path: "/chat/x", Timeout: 300 * time.Millisecond})
	if el := time.Since(t0); err == nil || el < 250*time.Millisecond || el > 3*time.Second {
		t.Fatalf("dial to a silent server: %v after %v, want a timeout after ~300ms", err, el)
	}
	if got := classifyDialError(err); got != "timeout" {
		t.Errorf("classified as %q (%v)", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	d := NewDialer(ctx)
	defer d.Close()
	done := make(chan error, 1)
	go func() {
		_, err := d.Dial(DialOptions{Addr: addr, Path: "/chat/x", Timeout: time.Minute})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	t0 = time.Now()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled dial succeeded")
		}
		if el := time.Since(t0); el > 2*time.Second {
			t.Errorf("cancelled dial took %v to end", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the context did not end the dial")
	}
	if _, err := d.Dial(DialOptions{Addr: addr, Path: "/chat/x", Timeout: time.Minute}); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("dial after cancel: %v, want canceled", err)
	}
	// The context's deadline bounds every dial too.
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	d2 := NewDialer(dctx)
	defer d2.Close()
	t0 = time.Now()
	if _, err := d2.Dial(DialOptions{Addr: addr, Path: "/chat/x", Timeout: time.Minute}); err == nil || time.Since(t0) > 3*time.Second {
		t.Errorf("dial under a 200ms context: %v after %v", err, time.Since(t0))
	}
}

// TestDialerHalfClose: the raw socket half-closes (CloseWrite) as
// net.TCPConn does: the server reads to EOF and can still answer.
func TestDialerHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
		_, _ = c.Write([]byte("after"))
	}()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	nc, err := dialRawSocket(ap, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := halfClose(nc, true, []byte("request")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "request" {
			t.Fatalf("server read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no EOF after CloseWrite")
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(nc)
	if string(b) != "after" {
		t.Fatalf("read after half-close: %q, %v", b, err)
	}
}

func countOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
