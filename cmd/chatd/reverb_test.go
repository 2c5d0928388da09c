package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// A Laravel app's Reverb credentials as `php artisan install:broadcasting`
// writes them to .env: a six-digit app ID, a 20-character key and secret.
const (
	reverbAppID     = "482913"
	reverbAppKey    = "w8kzq2m4p7x1c5v9b3nr"
	reverbAppSecret = "h6t2y8u4i0o3p7l1k9jd"
)

// TestChatdLaravelReverb runs server/pusher/jstest/reverb.mjs — Laravel
// Echo 2 with broadcaster 'reverb' configured as install:broadcasting's
// echo.js does from REVERB_HOST, REVERB_PORT and REVERB_SCHEME, next to
// broadcaster 'pusher', and a backend playing Laravel's /broadcasting/auth
// and broadcaster — against a chatd process started as README's "Coming
// from Reverb" says: the app's id, key and secret, client events on (Reverb
// accepts whispers by default), on the port REVERB_PORT names.
func TestChatdLaravelReverb(t *testing.T) {
	node, dir := jstest(t)
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	proc := startChatd(t, bin, "-addr", "127.0.0.1:0", "-app-id", reverbAppID, "-app-key", reverbAppKey,
		"-app-secret", reverbAppSecret, "-app-client-events")
	host, port, err := net.SplitHostPort(proc.addr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "--test", "--test-force-exit", "--test-concurrency=1", "reverb.mjs")
	cmd.Dir = dir
	cmd.Env = append(withoutChatdEnv(os.Environ()),
		"REVERB_APP_ID="+reverbAppID, "REVERB_APP_KEY="+reverbAppKey, "REVERB_APP_SECRET="+reverbAppSecret,
		"REVERB_HOST="+host, "REVERB_PORT="+port, "REVERB_SCHEME=http")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test reverb.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test reverb.mjs:\n%s", out)
}

// jstest returns node and server/pusher/jstest with its npm packages
// installed (npm ci if they are not).
func jstest(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the Laravel Echo tests need Node.js and npm")
	}
	dir = filepath.Join("..", "..", "server", "pusher", "jstest")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "laravel-echo")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm is not installed and server/pusher/jstest/node_modules is missing")
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return node, dir
}
