package server

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// historyFixture is a broadcastFixture whose messages come the way a raw
// member's do (rawProto.publishRaw): kept in the room's history when it
// has one, then fanned out. One member is the sender, so each message
// reaches the other members-1.
type historyFixture struct {
	broadcastFixture
	history bool
	sender  *Conn
}

func (hx *historyFixture) start(tb testing.TB, members int, history bool) {
	tb.Helper()
	hx.history = history
	cfg := Config{} // HistorySize zero: history.DefaultSize (100 messages)
	if !history {
		cfg.HistorySize = -1 // what chatd -history-size 0 sets
	}
	hx.startConfig(tb, members, cfg)
	if kept := hx.srv.hist != nil && hx.srv.rawHist.Size > 0; kept != history {
		tb.Fatalf("history=%v asked, but the server keeps raw history: %v", history, kept)
	}
	hx.room.mu.Lock()
	hx.sender = hx.room.members[0]
	hx.room.mu.Unlock()
}

// publish sends one message from the sender, as its read would.
func (hx *historyFixture) publish(payload []byte) {
	p := rawProto{s: hx.srv}
	if p.publishRaw(hx.sender, ws.OpText, payload) {
		hx.room.flush()
	}
	hx.sent += frameBytes * int64(hx.members-1)
}

// appended is how many messages the history store has kept so far.
func (hx *historyFixture) appended() uint64 {
	if hx.srv.hist == nil {
		return 0
	}
	return hx.srv.hist.Stats().Appended
}

// BenchmarkBroadcastHistory: BenchmarkBroadcast through the raw
// protocol's publish path, with the room's history on (the default: the
// last 100 messages kept, each framed once, the same bytes kept and fanned
// out) and off (-history-size 0). What history adds to a message is one
// lock, one frame allocation and a ring slot, against a fan-out of one
// write per member: compare history=on with history=off at each size.
// cpu-ns/delivery is this process's CPU (server and publisher, not the
// sink) per delivery, the figure chatbench's CPU per delivery compares.
func BenchmarkBroadcastHistory(b *testing.B) {
	hx := new(historyFixture)
	b.Cleanup(func() { hx.stop() })
	payload := bytes.Repeat([]byte("m"), broadcastPayload)
	for _, members := range []int{100, 1000, 10000} {
		for _, history := range []bool{true, false} {
			name := fmt.Sprintf("members=%d/history=off", members)
			if history {
				name = fmt.Sprintf("members=%d/history=on", members)
			}
			b.Run(name, func(b *testing.B) {
				if hx.members != members || hx.history != history || hx.srv == nil {
					hx.stop()
					*hx = historyFixture{}
					hx.start(b, members, history)
				}
				hx.publish(payload) // warm the pools
				hx.drain(b)
				kept0 := hx.appended()
				deliveries := members - 1
				b.SetBytes(frameBytes * int64(deliveries))
				b.ReportAllocs()
				cpu0 := processCPU()
				b.ResetTimer()
				for range b.N {
					hx.publish(payload)
				}
				hx.drain(b)
				b.StopTimer()
				cpu := processCPU() - cpu0
				// The path measured is the one asked for: every message
				// kept with history on, none with it off.
				want := uint64(0)
				if history {
					want = uint64(b.N)
				}
				if got := hx.appended() - kept0; got != want {
					b.Fatalf("history kept %d of %d messages, want %d", got, b.N, want)
				}
				b.ReportMetric(float64(deliveries), "deliveries/op")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(deliveries), "ns/delivery")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(deliveries), "cpu-ns/delivery")
			})
		}
	}
}

// processCPU is this process's CPU time so far (user and system, every
// thread): the server's and the benchmark's own, not the sink's. On a
// shared machine it is steadier than the wall time of ns/delivery.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
