package broker

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/bench/testutil/natstest"
)

// recorder is a HistoryHandler that can be made slow.
type recorder struct {
	mu      sync.Mutex
	seqs    []uint64
	behind  []bool // HistoryBehind calls
	ready   atomic.Bool
	gaps    atomic.Uint64
	stall   atomic.Bool // HistoryMessage waits for release
	release chan struct{}
	node    *NATS // the node it handles for
}

func (r *recorder) HistoryMessage(room, epoch string, seq uint64, stamp int64, node string, member uint64, marker, local bool, payload []byte, warm bool) {
	if r.stall.Load() {
		<-r.release
	}
	r.mu.Lock()
	r.seqs = append(r.seqs, seq)
	r.mu.Unlock()
}
func (r *recorder) HistoryReady(room, epoch string, seq uint64) { r.ready.Store(true) }
func (r *recorder) HistoryWaitingSince(string) int64            { return 0 }
func (r *recorder) HistoryUp(bool, string)                      {}
func (r *recorder) HistoryGap(room string, missed uint64)       { r.gaps.Add(missed) }
func (r *recorder) HistoryStopped(string)                       {}
func (r *recorder) HistoryBehind(_ string, on bool) {
	r.mu.Lock()
	r.behind = append(r.behind, on)
	r.mu.Unlock()
}

// A node whose consumer of a room lags more than the stream keeps per room
// is told how many messages it will never get (HistoryGap), instead of
// missing them silently.
func TestHistoryGapIsReported(t *testing.T) {
	pub, rec := followingPair(t)
	rec.stall.Store(true)
	// The window is 10,000 per room: 25,000 while the consumer is stalled.
	const total = 25000
	for i := 0; i < total; i++ {
		pub.KeptPublish("room", 0, false, 1, []byte("m"))
	}
	time.Sleep(500 * time.Millisecond)
	close(rec.release)
	testutil.CheckFor(t, 15*time.Second, func() error {
		rec.mu.Lock()
		got := uint64(len(rec.seqs))
		rec.mu.Unlock()
		if got+rec.gaps.Load() < total {
			return errorString("still delivering")
		}
		return nil
	})
	if rec.gaps.Load() == 0 {
		t.Fatal("messages were lost to the window and no gap was reported")
	}
	if st := rec.node.Stats(); st.Lost < rec.gaps.Load() {
		t.Fatalf("lost counted %d, gaps %d", st.Lost, rec.gaps.Load())
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// A consumer that falls half the window behind says so (the room's
// producers are then held back), again while it lasts, and says when it
// has caught up.
func TestHistoryBehindIsSignalled(t *testing.T) {
	pub, rec := followingPair(t)
	rec.stall.Store(true)
	const total = 8000 // more than half of the 10,000 window, less than all of it
	for i := 0; i < total; i++ {
		pub.KeptPublish("room", 0, false, 1, []byte("m"))
	}
	time.Sleep(300 * time.Millisecond)
	close(rec.release)
	testutil.CheckFor(t, 15*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if n := len(rec.behind); n < 2 || !rec.behind[0] || rec.behind[n-1] {
			return errorString("behind not signalled on, then off")
		}
		return nil
	})
	if rec.gaps.Load() != 0 {
		t.Fatalf("%d messages lost within the window", rec.gaps.Load())
	}
}

// followingPair starts a nats-server with JetStream and two nodes with
// history: pub to publish, and a node following "room" whose handler is
// the returned recorder (ready, not yet stalled).
func followingPair(t *testing.T) (*NATS, *recorder) {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ns := natstest.Start(t, port)
	pub := newNode(t, ns.ClientURL(), "pub", &received{})
	sub := newNode(t, ns.ClientURL(), "sub", &received{})
	keeps := func(string) bool { return true }
	pub.EnableHistory(HistoryConfig{Size: 1, TTL: time.Minute, MaxBytes: 64 << 20, Keeps: keeps, Handler: &recorder{}})
	rec := &recorder{release: make(chan struct{}), node: sub}
	sub.EnableHistory(HistoryConfig{Size: 1, TTL: time.Minute, MaxBytes: 64 << 20, Keeps: keeps, Handler: rec})
	testutil.CheckFor(t, 10*time.Second, func() error {
		for _, b := range []*NATS{pub, sub} {
			if ok, why := b.HistoryUp(); !ok {
				return errorString(why)
			}
		}
		return nil
	})
	sub.Interest("room", true)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if !rec.ready.Load() {
			return errorString("not following yet")
		}
		return nil
	})
	return pub, rec
}
