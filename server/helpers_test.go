package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// newTestServer starts a server on 127.0.0.1:0 and shuts it down when the
// test ends.
func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// wsURL returns ws://ADDR + path for s.
func wsURL(s *Server, path string) string { return "ws://" + s.Addr().String() + path }

// checkFor polls fn until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitConns waits until the server has n upgraded connections.
func waitConns(t testing.TB, s *Server, n int) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if got := s.Conns(); got != n {
			return fmt.Errorf("server has %d connections, want %d", got, n)
		}
		return nil
	})
}

// dialRaw opens a plain TCP connection to s.
func dialRaw(t testing.TB, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
