//go:build flood

package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

// TestChatdClusterFloodBackpressure (build tag flood: not yet reliable on
// 2 shared cores, see bench/RESULTS.md): ten raw senders on node a flood a
// room whose 40 readers, reading as fast as they can, are on nodes b and
// c. Backpressure reaches across nodes: b and c tell a's producers that
// the room is behind there, and a reads them more slowly, as it does for
// its own members. No reader is closed as a slow consumer and every one
// gets every message. Before, nothing held a producer back for members on
// other nodes: some readers were closed with 1008.
func TestChatdClusterFloodBackpressure(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	startNATSProc(t, natsBin, port, t.TempDir())
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	node := func(id string) *chatdProc {
		return startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", id, "-history-size", "0")
	}
	a, b, c := node("a"), node("b"), node("c")
	const (
		senders  = 10
		perSend  = 2000
		readers  = 40
		size     = 256
		room     = "flood"
		expected = senders * perSend
	)
	probe := join(t, a.addr, room)
	type reader struct {
		n    atomic.Int64
		code atomic.Int64 // close code, or -1 while open
		err  atomic.Value
		done chan struct{}
	}
	rs := make([]*reader, readers)
	for i := range rs {
		addr := b.addr
		if i%2 == 1 {
			addr = c.addr
		}
		m := join(t, addr, room)
		reach(t, probe, m, "reader "+strconv.Itoa(i))
		r := &reader{done: make(chan struct{})}
		r.code.Store(-1)
		rs[i] = r
		go func() {
			defer close(r.done)
			for ev := range m.ch {
				if ev.err != nil {
					var ce *websocket.CloseError
					if errors.As(ev.err, &ce) {
						r.code.Store(int64(ce.Code))
					}
					r.err.Store(ev.err.Error())
					return
				}
				if strings.HasPrefix(ev.data, "f") {
					r.n.Add(1)
				}
			}
		}()
	}

	go func() { // the probe on a reads too
		for range probe.ch {
		}
	}()
	payload := "f" + strings.Repeat("x", size-1)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range senders {
		s := join(t, a.addr, room)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Drain what the room sends to this sender, so that it is
			// never a slow consumer itself.
			go func() {
				for range s.ch {
				}
			}()
			for range perSend {
				if err := s.c.WriteMessage(websocket.TextMessage, []byte(payload)); err != nil {
					t.Errorf("sender %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sentIn := time.Since(start)
	var closed []string
	testutil.CheckFor(t, 60*time.Second, func() error {
		closed = closed[:0]
		short := 0
		for i, r := range rs {
			if code := r.code.Load(); code != -1 || r.err.Load() != nil {
				closed = append(closed, fmt.Sprintf("reader %d: close %d (%v)", i, code, r.err.Load()))
				continue
			}
			if r.n.Load() < expected {
				short++
			}
		}
		if len(closed) > 0 {
			return nil
		}
		if short > 0 {
			return fmt.Errorf("%d readers have not got every message yet", short)
		}
		return nil
	})
	if len(closed) > 0 {
		t.Fatalf("%d of %d readers on b and c closed by a flood from a: %v", len(closed), readers, closed)
	}
	for i, r := range rs {
		if got := r.n.Load(); got != expected {
			t.Fatalf("reader %d got %d of %d messages", i, got, expected)
		}
	}
	lost := 0
	for _, p := range []*chatdProc{a, b, c} {
		lost += metric(t, p.admin, "chatd_broker_lost_total")
		if n := metric(t, p.admin, "chatd_slow_consumers_total"); n != 0 {
			t.Fatalf("%s: chatd_slow_consumers_total %d", p.admin, n)
		}
	}
	t.Logf("%d messages of %d B from %d senders on a to %d readers on b and c in %v (sent), nothing lost (broker lost %d)",
		expected, size, senders, readers, sentIn.Round(time.Millisecond), lost)
}
