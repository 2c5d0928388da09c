package server

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"chatd/server/pusher"
)

// TestPusherJSClients runs the node tests in pusher/jstest — pusher-js,
// laravel-echo and the pusher server SDK, unmodified from npm — against a
// real chatd: public, private, cache and presence channels, events through
// the signed HTTP API, client events between two Echo clients, presence with
// two tabs of one user, refused signatures and connection errors,
// pusher:subscription_count (the default app with subscription_count on)
// and watchlist online/offline events.
func TestPusherJSClients(t *testing.T) {
	node, dir := jstestDir(t)
	app := pusher.DefaultApp()
	app.SubscriptionCount = true
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Apps: apps})
	// --test-force-exit: pusher-js's Node WebSocket arms a 30 s close timer
	// when the server closes first, which would hold each file open.
	cmd := exec.Command(node, "--test", "--test-force-exit", "--test-concurrency=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATD_URL=http://"+s.Addr().String(), "CHATD_SUBSCRIPTION_COUNT=1")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node tests failed: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", out)
}
