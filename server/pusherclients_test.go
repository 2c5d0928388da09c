package server

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestPusherJSClients runs the node tests in pusher/jstest — pusher-js,
// laravel-echo and the pusher server SDK, unmodified from npm — against a
// real chatd: public, private, cache and presence channels, events through
// the signed HTTP API, client events between two Echo clients, presence with
// two tabs of one user, refused signatures and connection errors.
func TestPusherJSClients(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the Pusher client tests need Node.js and npm")
	}
	dir := filepath.Join("pusher", "jstest")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pusher-js")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm is not installed and pusher/jstest/node_modules is missing")
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	s := newTestServer(t, Config{})
	// --test-force-exit: pusher-js's Node WebSocket arms a 30 s close timer
	// when the server closes first, which would hold each file open.
	cmd := exec.Command(node, "--test", "--test-force-exit", "--test-concurrency=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATD_URL=http://"+s.Addr().String())
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node tests failed: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", out)
}
