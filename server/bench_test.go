package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// Broadcast benchmarks and allocation tests. The members' client ends live
// in a child process (the "sink", TestHelperSinkProcess): every in-process
// TCP connection costs two fds against the 20000-fd limit, so 10000 members
// cannot have both ends here. The sink dials N WebSocket connections, says
// "ready", and counts every byte it reads; asked "wait BYTES" on stdin it
// answers "ok TOTAL" once it has read that many bytes in all.

const (
	sinkEnv          = "CHATD_TEST_BROADCAST_SINK" // "addr|path|count"
	broadcastRoom    = "bench"
	broadcastPayload = 64
)

// TestHelperSinkProcess is not a test: it is the child process that holds
// the members' client sockets for the broadcast benchmarks. It passes at
// once when run normally.
func TestHelperSinkProcess(t *testing.T) {
	spec := os.Getenv(sinkEnv)
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		fmt.Printf("error bad %s %q\n", sinkEnv, spec)
		os.Exit(2)
	}
	count, err := strconv.Atoi(parts[2])
	if err != nil {
		fmt.Printf("error bad count: %v\n", err)
		os.Exit(2)
	}
	runSink(parts[0], parts[1], count)
	os.Exit(0)
}

// sinkCounter is the sink's byte count and its single waiter.
type sinkCounter struct {
	total   atomic.Int64
	target  atomic.Int64 // bytes the waiter wants; MaxInt64: nobody waits
	reached chan struct{}
}

func (s *sinkCounter) add(n int) {
	if s.total.Add(int64(n)) >= s.target.Load() {
		select {
		case s.reached <- struct{}{}:
		default:
		}
	}
}

// wait blocks until total reaches want or timeout passes, and returns the
// answer line for the parent.
func (s *sinkCounter) wait(want int64, timeout time.Duration) string {
	s.target.Store(want)
	defer s.target.Store(1<<63 - 1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for s.total.Load() < want {
		select {
		case <-s.reached:
		case <-t.C:
			return fmt.Sprintf("timeout %d", s.total.Load())
		}
	}
	return fmt.Sprintf("ok %d", s.total.Load())
}

func runSink(addr, path string, count int) {
	ctr := &sinkCounter{reached: make(chan struct{}, 1)}
	ctr.target.Store(1<<63 - 1)

	conns := make([]net.Conn, count)
	var next atomic.Int64
	var failed atomic.Bool
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < min(64, count); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count || failed.Load() {
					return
				}
				c, err := sinkDial(addr, path, i, ctr)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					failed.Store(true)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		fmt.Printf("error %v\n", firstErr)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", count)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var want int64
		if _, err := fmt.Sscanf(in.Text(), "wait %d", &want); err != nil {
			fmt.Printf("error bad command %q\n", in.Text())
			continue
		}
		fmt.Println(ctr.wait(want, 60*time.Second))
	}
	for _, c := range conns {
		c.Close()
	}
}

// sinkDial opens member i: TCP, the upgrade, then a goroutine that reads
// and counts everything (frames right behind the 101 included).
func sinkDial(addr, path string, i int, ctr *sinkCounter) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		// Out of ephemeral ports on 127.0.0.1: spread over 127.0.0.x.
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	uc, err := testutil.Upgrade(c, addr, path, 30*time.Second)
	if err != nil {
		c.Close()
		return nil, err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := uc.Read(buf)
			if n > 0 {
				ctr.add(n)
			}
			if err != nil {
				return
			}
		}
	}()
	return c, nil
}

// sinkProc is the parent's handle on a sink child.
type sinkProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr bytes.Buffer
}

func (k *sinkProc) readLine(timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-k.lines:
		if !ok {
			return "", errors.New("sink exited")
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("no answer from the sink in %v", timeout)
	}
}

// waitBytes blocks until the sink has read total bytes since it started.
func (k *sinkProc) waitBytes(tb testing.TB, total int64) {
	if _, err := fmt.Fprintf(k.stdin, "wait %d\n", total); err != nil {
		tb.Fatalf("sink: %v", err)
	}
	l, err := k.readLine(90 * time.Second)
	if err != nil || !strings.HasPrefix(l, "ok ") {
		tb.Fatalf("sink waiting for %d bytes: %q %v", total, l, err)
	}
}

func (k *sinkProc) stop() { stopChild(k.cmd, k.stdin) }

// lastingTB reports failures to the benchmark running now, but keeps the
// cleanups for broadcastFixture.stop, so one fixture (10000 connections)
// serves every run of a sub-benchmark instead of being rebuilt per b.N.
type lastingTB struct {
	testing.TB
	cleanups *[]func()
}

func (l lastingTB) Cleanup(f func()) { *l.cleanups = append(*l.cleanups, f) }

// broadcastFixture is a server with members connections in one room, their
// client ends in a sink process.
type broadcastFixture struct {
	members  int
	srv      *Server
	room     *Room
	sink     *sinkProc
	sent     int64 // bytes every member should have got so far, times members
	cleanups []func()
}

var frameBytes = int64(wsframe.HeaderLen(broadcastPayload) + broadcastPayload)

// start fills fx (already reachable by the caller, so a
// failed setup can still be stopped).
func (fx *broadcastFixture) start(tb testing.TB, members int) {
	tb.Helper()
	fx.startConfig(tb, members, Config{})
}

// startConfig is start with a server configured by cfg (its ping and idle
// timeouts are set here).
func (fx *broadcastFixture) startConfig(tb testing.TB, members int, cfg Config) {
	tb.Helper()
	fx.members = members
	ltb := lastingTB{TB: tb, cleanups: &fx.cleanups}
	cfg.PingInterval, cfg.IdleTimeout = time.Hour, 2*time.Hour // no pings in the byte counts
	fx.srv = newTestServer(ltb, cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSinkProcess$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|/chat/%s|%d", sinkEnv, fx.srv.Addr(), broadcastRoom, members))
	k := &sinkProc{cmd: cmd, lines: make(chan string, 16)}
	cmd.Stderr = &k.stderr
	var err error
	if k.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	fx.sink = k
	// Stop the sink before the server (cleanups run last first), so the
	// server sees its members hang up instead of draining 10000 closes.
	fx.cleanups = append(fx.cleanups, k.stop)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			k.lines <- sc.Text()
		}
		close(k.lines)
	}()
	l, err := k.readLine(2 * time.Minute)
	if err != nil || !strings.HasPrefix(l, "ready ") {
		tb.Fatalf("sink with %d members: %q %v", members, l, err)
	}
	waitConns(tb, fx.srv, members)
	fx.room = fx.srv.Hub().Room(rawRoomKey(broadcastRoom))
	testutil.CheckFor(tb, 10*time.Second, func() error {
		if fx.room == nil {
			fx.room = fx.srv.Hub().Room(rawRoomKey(broadcastRoom))
			return errors.New("room not created yet")
		}
		if n := fx.room.Len(); n != members {
			return fmt.Errorf("room has %d members, want %d", n, members)
		}
		return nil
	})
}

func (fx *broadcastFixture) stop() {
	for i := len(fx.cleanups) - 1; i >= 0; i-- {
		fx.cleanups[i]()
	}
	fx.cleanups = nil
}

// publish sends one 64-byte text message to every member, as a member's
// message would be (framed once, fanned out); it does not wait.
func (fx *broadcastFixture) publish(payload []byte) {
	if fx.room.publish(ws.OpText, payload, nil) {
		fx.room.flush()
	}
	fx.sent += frameBytes * int64(fx.members)
}

// drain waits until every member has read everything published.
func (fx *broadcastFixture) drain(tb testing.TB) { fx.sink.waitBytes(tb, fx.sent) }

// BenchmarkBroadcast: one message published to a room of N members,
// delivered to all of them over real sockets. b.N messages are published
// back to back, and the clock stops when the members have read them all.
func BenchmarkBroadcast(b *testing.B) {
	fx := new(broadcastFixture)
	b.Cleanup(func() { fx.stop() })
	payload := bytes.Repeat([]byte("m"), broadcastPayload)
	for _, members := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			if fx.members != members {
				fx.stop()
				*fx = broadcastFixture{}
				fx.start(b, members)
			}
			fx.publish(payload) // warm the pools
			fx.drain(b)
			b.SetBytes(frameBytes * int64(members))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				fx.publish(payload)
			}
			fx.drain(b)
			b.StopTimer()
			b.ReportMetric(float64(members), "deliveries/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(members), "ns/delivery")
		})
	}
}

// TestBroadcastAllocsDoNotGrowWithMembers: publishing to a room frames the
// message once and hands the same bytes to every member, so the allocations
// per publish must not grow with the room (DESIGN.md, "Fan-out as jobs").
// 2000 members also covers fan-out split into chunk jobs.
func TestBroadcastAllocsDoNotGrowWithMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a sink process with thousands of connections")
	}
	sizes := []int{50, 500, 2000}
	const publishes = 200
	payload := bytes.Repeat([]byte("m"), broadcastPayload)
	perPublish := make(map[int]float64)
	for _, members := range sizes {
		fx := new(broadcastFixture)
		func() {
			defer fx.stop()
			fx.start(t, members)
			for range 20 { // warm the pools
				fx.publish(payload)
				fx.drain(t)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range publishes {
				// One publish at a time, drained before the next, so every
				// publish pays for a whole fan-out of its own (no batching).
				fx.publish(payload)
				fx.drain(t)
			}
			runtime.ReadMemStats(&after)
			perPublish[members] = float64(after.Mallocs-before.Mallocs) / publishes
		}()
		t.Logf("members=%d: %.2f allocs per publish (including the test's own wait on the sink)", members, perPublish[members])
	}
	base := perPublish[sizes[0]]
	// Rooms up to fanoutChunk members are served inline: the same count.
	if got := perPublish[500]; got > base+2 {
		t.Errorf("allocs per publish grew from %.2f (50 members) to %.2f (500 members)", base, got)
	}
	// Larger rooms may add a job per chunk of members, never one per member.
	for _, members := range sizes[1:] {
		slope := (perPublish[members] - base) / float64(members-sizes[0])
		if slope > 1.0/64 {
			t.Errorf("allocs per publish grow by %.3f per member (%.2f at %d, %.2f at %d members)",
				slope, base, sizes[0], perPublish[members], members)
		}
	}
}

// BenchmarkUpgrade: one complete handshake over a real socket per op
// (dial, request, 101, close), through the poller, the head buffer and
// ws.Upgrader.
func BenchmarkUpgrade(b *testing.B) {
	s := newTestServer(b, Config{})
	addr := s.Addr().String()
	req := []byte(testutil.UpgradeRequest("x", "/chat/bench"))
	buf := make([]byte, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
			b.Fatalf("handshake: %q %v", buf[:n], err)
		}
		c.Close()
	}
}

// BenchmarkIdleConnection: what one idle WebSocket connection costs the
// server's heap (after GC), one connection per op, all held at the end.
// The clients are raw sockets driven by syscalls, so they put nothing on
// Go's heap. Run with -benchtime Nx (N connections; under the fd limit).
func BenchmarkIdleConnection(b *testing.B) {
	s := newTestServer(b, Config{})
	sa := &syscall.SockaddrInet4{Port: s.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
	req := []byte(testutil.UpgradeRequest("x", "/chat/idle"))
	buf := make([]byte, 512)
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	fds := make([]int, 0, b.N)
	b.Cleanup(func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	})
	before := heap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			b.Fatal(err)
		}
		syscall.CloseOnExec(fd)
		fds = append(fds, fd)
		if err := syscall.Connect(fd, sa); err != nil {
			b.Fatal(err)
		}
		if _, err := syscall.Write(fd, req); err != nil {
			b.Fatal(err)
		}
		if n, err := syscall.Read(fd, buf); err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
			b.Fatalf("handshake: %q %v", buf[:max(n, 0)], err)
		}
	}
	b.StopTimer()
	testutil.CheckFor(b, 10*time.Second, func() error {
		if got := s.Conns(); got != b.N {
			return fmt.Errorf("%d connections, want %d", got, b.N)
		}
		return nil
	})
	b.ReportMetric(float64(heap()-before)/float64(b.N), "heap-B/conn")
}
