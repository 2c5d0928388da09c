package poller

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatd/bench/testutil"

	"golang.org/x/sys/unix"
)

// TestNoWebSocketImports: the poller knows fds and bytes only (STYLE.md:
// "A test can assert that poller does not import ws").
func TestNoWebSocketImports(t *testing.T) {
	goTool, err := testutil.GoTool()
	if err != nil {
		t.Skipf("no go tool: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "chatd/poller").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	for _, dep := range deps {
		switch {
		case strings.HasPrefix(dep, "github.com/gobwas/"),
			dep == "chatd/server", strings.HasPrefix(dep, "chatd/server/"),
			strings.HasPrefix(dep, "chatd/") && dep != "chatd/poller":
			t.Errorf("poller depends on %s", dep)
		}
	}
}

func quietConfig(workers int) Config {
	return Config{Workers: workers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// newTestPoller starts a poller on the engine CHATD_POLLER names (the
// default when unset; see TestMain) unless cfg.Engine says otherwise.
func newTestPoller(t *testing.T, cfg Config) *Poller {
	t.Helper()
	if cfg.Engine == "" {
		cfg.Engine = testEngine
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// funcHandler is a Handler made of optional funcs.
type funcHandler struct {
	data     func(w *Worker, p []byte)
	writable func(w *Worker)
	wake     func(w *Worker)
	hangup   func(w *Worker, err error)
}

func (h *funcHandler) OnData(w *Worker, p []byte) {
	if h.data != nil {
		h.data(w, p)
	}
}
func (h *funcHandler) OnWritable(w *Worker) {
	if h.writable != nil {
		h.writable(w)
	}
}
func (h *funcHandler) OnWake(w *Worker) {
	if h.wake != nil {
		h.wake(w)
	}
}
func (h *funcHandler) OnHangup(w *Worker, err error) {
	if h.hangup != nil {
		h.hangup(w, err)
	}
}

// serve listens on 127.0.0.1:0 and registers every accepted fd with the
// handler newHandler returns, sending the Desc on the returned channel.
func serve(t *testing.T, p *Poller, newHandler func(d **Desc) Handler) (*Listener, chan *Desc) {
	t.Helper()
	descs := make(chan *Desc, 1024)
	ln, err := p.Listen("127.0.0.1:0", func(fd int) {
		d := new(Desc)
		h := newHandler(&d)
		if err := p.Register(d, fd, h); err != nil {
			t.Errorf("Register: %v", err)
			unix.Close(fd)
			return
		}
		descs <- d
	})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return ln, descs
}

func dial(t *testing.T, ln *Listener) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func recvDesc(t *testing.T, descs chan *Desc) *Desc {
	t.Helper()
	select {
	case d := <-descs:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// TestEchoAndHangup: accept, Register, OnData, Write, then the peer's FIN
// arrives as OnHangup(nil) and Close closes the socket.
func TestEchoAndHangup(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	hangups := make(chan error, 1)
	ln, descs := serve(t, p, func(d **Desc) Handler {
		return &funcHandler{
			data: func(_ *Worker, b []byte) {
				if n, err := (*d).Write(b); err != nil || n != len(b) {
					t.Errorf("Write: %d of %d, %v", n, len(b), err)
				}
			},
			hangup: func(_ *Worker, err error) {
				hangups <- err
				if err := (*d).Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := (*d).Close(); err != nil {
					t.Errorf("second Close: %v, want nil", err)
				}
			},
		}
	})
	c := dial(t, ln)
	d := recvDesc(t, descs)
	if d.Fd() <= 0 {
		t.Fatalf("Fd() = %d", d.Fd())
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 200000)} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo: %v (%d bytes)", err, len(got))
		}
	}
	c.CloseWrite()
	select {
	case err := <-hangups:
		if err != nil {
			t.Fatalf("OnHangup(%v), want nil for EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnHangup after the peer's FIN")
	}
	if !d.Closed() {
		t.Fatal("Closed() false after Close")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after server Close: %d, %v; want EOF", n, err)
	}
	if got := ln.Accepted.Load(); got != 1 {
		t.Fatalf("Accepted = %d, want 1", got)
	}
}

// TestWakeAndClose: Wake from another goroutine runs OnWake on a worker;
// Close from OnWake ends the connection; no callback follows Close.
func TestWakeAndClose(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	var wakes, afterClose atomic.Int32
	var closed atomic.Bool
	woke := make(chan struct{}, 100)
	ln, descs := serve(t, p, func(d **Desc) Handler {
		after := func() {
			if closed.Load() {
				afterClose.Add(1)
			}
		}
		return &funcHandler{
			data:     func(*Worker, []byte) { after() },
			writable: func(*Worker) { after() },
			hangup:   func(*Worker, error) { after() },
			wake: func(*Worker) {
				after()
				if wakes.Add(1) == 3 {
					closed.Store(true)
					(*d).Close()
				}
				woke <- struct{}{}
			},
		}
	})
	c := dial(t, ln)
	d := recvDesc(t, descs)
	for i := 0; i < 3; i++ {
		d.Wake()
		select {
		case <-woke:
		case <-time.After(5 * time.Second):
			t.Fatalf("OnWake %d not called", i+1)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after Close in OnWake: %v, want EOF", err)
	}
	// Events after Close: none may reach the handler.
	d.Wake()
	c.Write([]byte("late"))
	time.Sleep(50 * time.Millisecond)
	if n := afterClose.Load(); n != 0 {
		t.Fatalf("%d callbacks after Close", n)
	}
	if n := wakes.Load(); n != 3 {
		t.Fatalf("%d OnWake calls, want 3", n)
	}
}

// TestShutdownHalfCloses: Shutdown sends FIN but keeps reading.
func TestShutdownHalfCloses(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	got := make(chan string, 10)
	ln, descs := serve(t, p, func(d **Desc) Handler {
		return &funcHandler{
			data:   func(_ *Worker, b []byte) { got <- string(b) },
			hangup: func(*Worker, error) { (*d).Close() },
		}
	})
	c := dial(t, ln)
	d := recvDesc(t, descs)
	if err := d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after Shutdown: %v, want EOF", err)
	}
	c.Write([]byte("still here"))
	select {
	case s := <-got:
		if s != "still here" {
			t.Fatalf("OnData(%q)", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnData after Shutdown")
	}
}

// TestPanicBecomesHangup: a panicking callback reaches OnHangup as a
// *PanicError and the worker survives.
func TestPanicBecomesHangup(t *testing.T) {
	p := newTestPoller(t, quietConfig(1))
	hangups := make(chan error, 10)
	ln, descs := serve(t, p, func(d **Desc) Handler {
		return &funcHandler{
			data: func(_ *Worker, b []byte) {
				if string(b) == "boom" {
					panic("boom")
				}
				(*d).Write(b)
			},
			hangup: func(_ *Worker, err error) {
				hangups <- err
				(*d).Close()
			},
		}
	})
	c := dial(t, ln)
	recvDesc(t, descs)
	c.Write([]byte("boom"))
	select {
	case err := <-hangups:
		var pe *PanicError
		if !errors.As(err, &pe) || pe.Value != "boom" {
			t.Fatalf("OnHangup(%v), want *PanicError boom", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnHangup after a panic")
	}
	// The only worker still serves other connections.
	c2 := dial(t, ln)
	recvDesc(t, descs)
	c2.Write([]byte("ok"))
	buf := make([]byte, 2)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("second connection: %q %v", buf, err)
	}
}

// pattern returns n buffers of sizes 1..n bytes with distinct contents.
func pattern(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{byte('A' + i%50)}, size)
	}
	return bufs
}

// TestWritevOver64Buffers: one Writev takes at most 64 non-empty buffers;
// empty buffers do not count; the count returned is exact, so the caller
// can resume from it.
func TestWritevOver64Buffers(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	ln, descs := serve(t, p, func(d **Desc) Handler {
		return &funcHandler{hangup: func(*Worker, error) { (*d).Close() }}
	})
	c := dial(t, ln)
	d := recvDesc(t, descs)

	bufs := pattern(100, 10)
	// Empty buffers in between are skipped and do not use an iovec.
	var mixed [][]byte
	for i, b := range bufs {
		mixed = append(mixed, b)
		if i%3 == 0 {
			mixed = append(mixed, nil)
		}
	}
	n, err := d.Writev(mixed)
	if err != nil {
		t.Fatal(err)
	}
	if n != 64*10 {
		t.Fatalf("Writev(100 non-empty buffers) = %d, want %d (64 buffers)", n, 64*10)
	}
	// Resume from n the way a caller does.
	rest := bytes.Join(bufs, nil)[n:]
	var restBufs [][]byte
	for len(rest) > 0 {
		k := min(10, len(rest))
		restBufs = append(restBufs, rest[:k])
		rest = rest[k:]
	}
	n2, err := d.Writev(restBufs)
	if err != nil || n2 != 36*10 {
		t.Fatalf("second Writev = %d, %v; want 360", n2, err)
	}
	want := bytes.Join(bufs, nil)
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client got %q, %v", got, err)
	}
	if n, err := d.Writev(nil); n != 0 || err != nil {
		t.Fatalf("Writev(nil) = %d, %v", n, err)
	}
	if n, err := d.Writev([][]byte{nil, {}}); n != 0 || err != nil {
		t.Fatalf("Writev(empty buffers) = %d, %v", n, err)
	}
}

// TestWriteFullSocket: with a full socket, Write and Writev return partial
// counts (possibly 0) and no error; OnWritable follows once the peer reads;
// the bytes the peer gets are exactly the ones the counts reported.
func TestWriteFullSocket(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	writable := make(chan struct{}, 100)
	ln, descs := serve(t, p, func(d **Desc) Handler {
		return &funcHandler{
			writable: func(*Worker) { writable <- struct{}{} },
			hangup:   func(*Worker, error) { (*d).Close() },
		}
	})
	c := dial(t, ln)
	c.SetReadBuffer(4096)
	d := recvDesc(t, descs)
	if err := unix.SetsockoptInt(d.Fd(), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	// Drain OnWritable events from registration.
	time.Sleep(20 * time.Millisecond)
	for len(writable) > 0 {
		<-writable
	}

	var sent []byte
	big := bytes.Repeat([]byte("0123456789"), 100000) // 1 MB: more than the socket holds
	n, err := d.Write(big)
	if err != nil || n <= 0 || n >= len(big) {
		t.Fatalf("Write(1 MB) to a small socket = %d, %v; want a partial count", n, err)
	}
	sent = append(sent, big[:n]...)
	// Now the socket is full: Writev of 100 buffers takes nothing or part.
	bufs := pattern(100, 1000)
	n, err = d.Writev(bufs)
	if err != nil || n < 0 || n >= 64*1000 {
		t.Fatalf("Writev on a full socket = %d, %v", n, err)
	}
	sent = append(sent, bytes.Join(bufs, nil)[:n]...)

	// The peer reads everything; then OnWritable must come.
	got := make([]byte, len(sent))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("peer got different bytes than the write counts reported")
	}
	select {
	case <-writable:
	case <-time.After(5 * time.Second):
		t.Fatal("no OnWritable after the socket drained")
	}
	// Nothing extra was sent.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if k, _ := c.Read(make([]byte, 1)); k != 0 {
		t.Fatal("peer got more bytes than the counts reported")
	}
}

// TestAcceptNotConcurrent: the AcceptFunc runs on one goroutine, never two
// calls at once, even under a burst of connections.
func TestAcceptNotConcurrent(t *testing.T) {
	p := newTestPoller(t, quietConfig(4))
	var inside, overlaps, accepted atomic.Int32
	ln, err := p.Listen("127.0.0.1:0", func(fd int) {
		if inside.Add(1) != 1 {
			overlaps.Add(1)
		}
		// Widen the window a little.
		for i := 0; i < 1000; i++ {
			_ = inside.Load()
		}
		accepted.Add(1)
		inside.Add(-1)
		unix.Close(fd)
	})
	if err != nil {
		t.Fatal(err)
	}
	const clients = 300
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < clients/10; i++ {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := accepted.Load(); n != clients {
			return fmt.Errorf("accepted %d of %d", n, clients)
		}
		return nil
	})
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("AcceptFunc ran concurrently %d times", n)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("dial succeeded after Listener.Close")
	}
}

// serialHandler counts how many of its callbacks run at once.
type serialHandler struct {
	d        *Desc
	inside   atomic.Int32
	overlaps *atomic.Int32
	bytes    atomic.Int64
	wakes    atomic.Int64
	hangups  atomic.Int32
	after    *atomic.Int32 // callbacks after OnHangup
}

func (h *serialHandler) enter() {
	if h.inside.Add(1) != 1 {
		h.overlaps.Add(1)
	}
	if h.hangups.Load() != 0 {
		h.after.Add(1)
	}
	for i := 0; i < 200; i++ { // widen the window
		_ = h.inside.Load()
	}
}

func (h *serialHandler) leave() { h.inside.Add(-1) }

func (h *serialHandler) OnData(_ *Worker, p []byte) {
	h.enter()
	defer h.leave()
	h.bytes.Add(int64(len(p)))
	// Echo a little, so writes race with reads and Wakes.
	if len(p) > 0 {
		h.d.Write(p[:1])
	}
}

func (h *serialHandler) OnWritable(*Worker) {
	h.enter()
	defer h.leave()
}

func (h *serialHandler) OnWake(*Worker) {
	h.enter()
	defer h.leave()
	h.wakes.Add(1)
}

func (h *serialHandler) OnHangup(_ *Worker, err error) {
	h.enter()
	defer h.leave()
	if h.hangups.Add(1) != 1 {
		h.overlaps.Add(1000) // a second OnHangup is as bad
	}
	h.d.Close()
}

// TestDescCallbacksNeverConcurrent: under many reads, wakes from several
// goroutines and writes, one Desc's callbacks never overlap, OnHangup comes
// once and nothing follows it.
func TestDescCallbacksNeverConcurrent(t *testing.T) {
	p := newTestPoller(t, Config{Workers: 4, ReadBufferSize: 512, ReadBudget: 1024,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var overlaps, after atomic.Int32
	var mu sync.Mutex
	var handlers []*serialHandler
	ready := make(chan *serialHandler, 64)
	ln, err := p.Listen("127.0.0.1:0", func(fd int) {
		h := &serialHandler{overlaps: &overlaps, after: &after}
		h.d = new(Desc)
		if err := p.Register(h.d, fd, h); err != nil {
			t.Error(err)
			unix.Close(fd)
			return
		}
		mu.Lock()
		handlers = append(handlers, h)
		mu.Unlock()
		ready <- h
	})
	if err != nil {
		t.Fatal(err)
	}
	const conns, writes = 16, 500
	msg := bytes.Repeat([]byte("z"), 700)
	var load, readers sync.WaitGroup
	var clients []*net.TCPConn
	var hs []*serialHandler
	for i := 0; i < conns; i++ {
		c := dial(t, ln)
		h := <-ready
		clients = append(clients, c)
		hs = append(hs, h)
		load.Add(2)
		go func() { // writer
			defer load.Done()
			for k := 0; k < writes; k++ {
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // waker
			defer load.Done()
			for k := 0; k < 2000; k++ {
				h.d.Wake()
			}
		}()
		readers.Add(1)
		go func() { // reader of the echoes, until the server closes
			defer readers.Done()
			io.Copy(io.Discard, c)
		}()
	}
	load.Wait()
	for _, h := range hs {
		testutil.CheckFor(t, 10*time.Second, func() error {
			if got := h.bytes.Load(); got != writes*int64(len(msg)) {
				return fmt.Errorf("server read %d of %d bytes", got, writes*len(msg))
			}
			return nil
		})
	}
	for _, c := range clients {
		c.CloseWrite()
	}
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not close every connection after the peers' FIN")
	}
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("callbacks of one Desc overlapped (or OnHangup repeated): %d", n)
	}
	if n := after.Load(); n != 0 {
		t.Fatalf("%d callbacks after OnHangup", n)
	}
	for i, h := range hs {
		if h.hangups.Load() != 1 || h.wakes.Load() == 0 {
			t.Fatalf("conn %d: %d hangups, %d wakes", i, h.hangups.Load(), h.wakes.Load())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handlers) != conns {
		t.Fatalf("%d connections registered, want %d", len(handlers), conns)
	}
}

// TestSubmitOverflowStartsNoGoroutine: tasks that find the queue full wait
// in the overflow list and all run, in order, without a goroutine each.
func TestSubmitOverflowStartsNoGoroutine(t *testing.T) {
	p, err := New(Config{Workers: 1, QueueSize: 2, Engine: testEngine})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 1000
	var mu sync.Mutex
	var order []int
	done := make(chan struct{})
	before := runtime.NumGoroutine()
	var during int
	p.Submit(func(*Worker) {
		// The only worker is busy here, so all but two of these overflow.
		for i := 0; i < n; i++ {
			p.Submit(func(*Worker) {
				mu.Lock()
				order = append(order, i)
				if len(order) == n {
					close(done)
				}
				mu.Unlock()
			})
		}
		during = runtime.NumGoroutine()
	})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("only %d of %d submitted tasks ran", len(order), n)
	}
	if during > before+1 {
		t.Fatalf("goroutines went from %d to %d while %d tasks overflowed", before, during, n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("task %d ran as number %d", v, i)
		}
	}
}
