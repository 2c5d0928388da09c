package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"chatd/bench/testutil"
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

// waitConns waits until the server has n upgraded connections.
func waitConns(t testing.TB, s *Server, n int) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
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

// stopChild ends a child process of a test (a helper "test" re-executed
// with an environment variable): closing its stdin tells it to exit; it is
// killed if it has not within 10s.
func stopChild(cmd *exec.Cmd, stdin io.Closer) {
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
