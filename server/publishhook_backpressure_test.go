package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pubhook"

	"github.com/gorilla/websocket"
)

// gatedHook is a publish hook backend that holds every POST until open is
// called, then allows everything.
type gatedHook struct {
	srv   *httptest.Server
	gate  chan struct{}
	once  sync.Once
	posts atomic.Int64
}

func newGatedHook(t testing.TB) *gatedHook {
	g := &gatedHook{gate: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		g.posts.Add(1)
		select {
		case <-g.gate:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `{"action":"allow"}`)
	}))
	t.Cleanup(func() { g.open(); g.srv.Close() })
	return g
}

func (g *gatedHook) open() { g.once.Do(func() { close(g.gate) }) }

// TestRawPublishHookBackpressure: while the backend stalls on a sender's
// first message, chatd does not read that sender further: the messages
// waiting on the hook stay within one read buffer's worth (not the many
// megabytes the client tries to send), the client's writes block (TCP
// flow control), and once the backend answers every message is delivered,
// in order. Without Desc.PauseRead in rawProto.guarded chatd would read
// the whole stream into the hook's queue and the writer would finish.
func TestRawPublishHookBackpressure(t *testing.T) {
	hook := newGatedHook(t)
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0", HistorySize: -1,
		PublishHook: pubhook.Config{URL: hook.srv.URL, Timeout: time.Minute}})
	defer hook.open() // on failure: before the server's cleanup waits for the POST in flight
	sender := dialPlain(t, s, "/chat/bp")
	member := dialPlain(t, s, "/chat/bp")
	waitConns(t, s, 2)

	// 16 MiB in 4 KiB messages: far more than the loopback socket buffers
	// (a few MiB at most) hold between a writer and a reader that stops.
	const n, size = 4096, 4 << 10
	msg := func(i int) []byte {
		b := bytes.Repeat([]byte{'.'}, size)
		copy(b, fmt.Sprintf("m%05d ", i))
		return b
	}
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := sender.WriteMessage(websocket.TextMessage, msg(i)); err != nil {
				werr <- err
				return
			}
			written.Add(1)
		}
		werr <- nil
	}()

	testutil.CheckFor(t, 10*time.Second, func() error {
		if hook.posts.Load() == 0 {
			return fmt.Errorf("the hook has not been asked yet")
		}
		return nil
	})
	// Wait for the writer to stop making progress (bounded: 10 s).
	last, still := int64(-1), 0
	for deadline := time.Now().Add(10 * time.Second); still < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if w := written.Load(); w == last {
			still++
		} else {
			last, still = w, 0
		}
	}
	if w := written.Load(); w >= n {
		t.Fatalf("the writer sent all %d messages (%d MiB) while the hook stalled: chatd kept reading the connection", n, n*size>>20)
	}
	if p := hook.posts.Load(); p != 1 {
		t.Errorf("the hook got %d POSTs while its first stalled, want 1 (one sender's messages are decided in order)", p)
	}
	// At most one read (64 KiB, the poller's default buffer) of frames was
	// handed to the hook before the connection was paused.
	bound := float64(64<<10/size + 1)
	_, body := adminGet(t, s, "/metrics")
	waiting, err := metricValue(body, `chatd_publish_hook_waiting{hook="raw"}`)
	if err != nil {
		t.Fatal(err)
	}
	if waiting < 1 || waiting > bound {
		t.Fatalf("chatd_publish_hook_waiting = %v with the writer blocked after %d messages, want 1..%v (one read's worth)", waiting, written.Load(), bound)
	}
	t.Logf("stalled: writer blocked after %d of %d messages (%.1f MiB), %v waiting on the hook", written.Load(), n, float64(written.Load()*size)/(1<<20), waiting)

	hook.open()
	member.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for i := range n {
		_, m, err := member.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m, msg(i)) {
			t.Fatalf("message %d is %.7q, want %.7q: out of order or changed", i, m, msg(i))
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	waitMetric(t, s, `chatd_publish_hook_waiting{hook="raw"}`, 0)
	waitMetric(t, s, `chatd_publish_hook_decisions_total{action="allow",hook="raw"}`, n)
}

// coalescingConn holds what is written while held and writes it in one
// call on flush, so chatd reads several WebSocket frames at once.
type coalescingConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (c *coalescingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.buf = append(c.buf, b...)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *coalescingConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	_, err := c.Conn.Write(c.buf)
	return err
}

// TestRawPublishHookSenderGone: a sender's three messages wait on a
// stalled hook and the sender closes (its close frame in the same write):
// the three are dropped, none published, and
// chatd_publish_hook_sender_gone_total counts them.
func TestRawPublishHookSenderGone(t *testing.T) {
	hook := newGatedHook(t)
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0", HistorySize: -1,
		PublishHook: pubhook.Config{URL: hook.srv.URL, Timeout: time.Minute}})
	var cc *coalescingConn
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cc = &coalescingConn{Conn: c}
			return cc, nil
		}}
	sender, _, err := d.Dial(wsURL(s, "/chat/gone"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	member := dialPlain(t, s, "/chat/gone")
	waitConns(t, s, 2)
	cc.mu.Lock()
	cc.hold = true
	cc.mu.Unlock()
	for _, m := range []string{"one", "two", "three"} {
		if err := sender.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sender.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := cc.flush(); err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 1)
	// The backend answers the first (its POST was in flight) only now.
	hook.open()
	waitMetric(t, s, `chatd_publish_hook_sender_gone_total{hook="raw"}`, 3)
	waitMetric(t, s, `chatd_publish_hook_waiting{hook="raw"}`, 0)
	if p := hook.posts.Load(); p > 1 {
		t.Errorf("the hook got %d POSTs, want at most 1 (the first, if it was in flight; the rest are dropped unasked)", p)
	}
	member.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, m, err := member.ReadMessage(); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("member got %q (%v): a gone sender's message was published", m, err)
	}
}
