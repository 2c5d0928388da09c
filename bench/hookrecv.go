package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// A local publish hook receiver ({hook} in a server command): chatbench
// starts itself as a separate process for each run of such a command,
// listening on a free loopback port, and replaces {hook} with its URL
// (http://127.0.0.1:PORT/hook), so that chatd's -publish-hook-url POSTs
// every message there before its fan-out. The receiver answers every POST
// {"action":"allow"} at once: what it measures is the hook's own cost
// (chatd's POST and wait, the receiver's HTTP work), not a backend's
// decision. Its process is sampled apart from the server's: the server
// figures stay chatd's alone, and the phase reports the receiver's CPU
// and the POSTs it answered.

// hookPlaceholder is what chatbench replaces with the receiver's URL in a
// server command.
const hookPlaceholder = "{hook}"

// hookEnv, set to a listen address, makes chatbench a hook receiver.
const hookEnv = "CHATBENCH_HOOK_RECEIVER"

// hookAllow is every answer.
var hookAllow = []byte(`{"action":"allow"}`)

// runHookReceiver serves the receiver on addr until the process is
// stopped: POST /hook is answered allow and counted; GET /stats is
// {"posts":N}.
func runHookReceiver(addr string) error {
	var posts atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hook", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		posts.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(hookAllow)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"posts":%d}`, posts.Load())
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	return srv.Serve(ln)
}

// runHookReceiverIfAsked turns this process into a hook receiver when
// CHATBENCH_HOOK_RECEIVER is set; it never returns then.
func runHookReceiverIfAsked() {
	addr := os.Getenv(hookEnv)
	if addr == "" {
		return
	}
	err := runHookReceiver(addr)
	fmt.Fprintln(os.Stderr, "chatbench hook receiver:", err)
	os.Exit(1)
}

// startHookReceiver starts a receiver process (this executable again) on
// a free loopback port and waits until it listens; its url is the one
// that replaces {hook}.
func startHookReceiver(ctx context.Context, timeout time.Duration) (*instance, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("chatbench: {hook}: cannot find its own executable to run the receiver: %w", err)
	}
	in, err := startListener(ctx, "hook receiver ({hook})", "http", func(addr string, _ int) string {
		return fmt.Sprintf("%s=%s exec %s", hookEnv, addr, shellQuote(exe))
	}, timeout)
	if err != nil {
		return nil, err
	}
	in.url += "/hook"
	return in, nil
}

// hookPosts asks a receiver how many POSTs it has answered.
func hookPosts(in *instance) (int64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + in.addr + "/stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Posts int64 `json:"posts"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<10)).Decode(&st); err != nil {
		return 0, fmt.Errorf("hook receiver stats: %w", err)
	}
	return st.Posts, nil
}

// hookSample is a receiver's CPU and POSTs at one time.
type hookSample struct {
	cpu   time.Duration
	posts int64
	ok    bool
}

func sampleHook(in *instance) hookSample {
	if in == nil || in.pid == 0 {
		return hookSample{}
	}
	cpu, err := ReadProcCPU(in.pid)
	if err != nil {
		return hookSample{}
	}
	posts, err := hookPosts(in)
	if err != nil {
		return hookSample{}
	}
	return hookSample{cpu: cpu, posts: posts, ok: true}
}

// hasHook reports whether a command takes a receiver.
func hasHook(command string) bool { return strings.Contains(command, hookPlaceholder) }
