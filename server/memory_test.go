package server

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"testing"
	"time"
	"unsafe"

	"chatd/bench/testutil"
)

// TestConnSize: a connection at rest is one Conn (the poller's Desc is
// embedded in it), so its size is what each idle connection costs the
// heap, with a pointer in the poller's fd table and a slot in its room.
// 224 bytes is a size class of Go's allocator: one field more moves every
// connection to the 240-byte class.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(Conn{}); got > 224 {
		t.Errorf("unsafe.Sizeof(Conn{}) = %d bytes, want at most 224", got)
	}
}

// TestRunSetsGCPercent: Run sets the process's GC target from
// Config.GCPercent (zero: DefaultGCPercent) unless GOGC is in the
// environment; New alone leaves it alone.
func TestRunSetsGCPercent(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: Run leaves the runtime's setting alone")
	}
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	gogc := func() int {
		s := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}}
		rtmetrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	newTestServer(t, Config{GCPercent: 40})
	if got := gogc(); got != 100 {
		t.Fatalf("after New: GC percent %d, want 100 (untouched)", got)
	}
	for _, tc := range []struct{ cfg, want int }{{40, 40}, {0, DefaultGCPercent}} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, Config{Addr: "127.0.0.1:0", GCPercent: tc.cfg}) }()
		testutil.CheckFor(t, 5*time.Second, func() error {
			if got := gogc(); got != tc.want {
				return fmt.Errorf("GCPercent %d: GC percent %d, want %d", tc.cfg, got, tc.want)
			}
			return nil
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		debug.SetGCPercent(100)
	}
}
