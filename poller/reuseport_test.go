package poller

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"chatd/bench/testutil"

	"golang.org/x/sys/unix"
)

// listenCounting listens on addr with opts and closes every accepted
// socket; the Listener's Accepted counter says how many it took.
func listenCounting(t *testing.T, p *Poller, addr string, opts ...ListenOption) (*Listener, error) {
	t.Helper()
	ln, err := p.Listen(addr, func(fd int) { unix.Close(fd) }, opts...)
	if err == nil {
		t.Cleanup(func() { ln.Close() })
	}
	return ln, err
}

// dialAndClose opens n connections to addr, one after another, closing
// each, and fails t at the first that does not connect.
func dialAndClose(t *testing.T, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d of %d: %v", i+1, n, err)
		}
		c.Close()
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestListenReusePort: two pollers (as two processes would) listen on one
// 127.0.0.1 port with ReusePort, the kernel spreads connections over both,
// and when one closes the other takes every new connection.
func TestListenReusePort(t *testing.T) {
	if err := CheckReusePort(); err != nil {
		// Not spread on this OS: Listen says so instead of half working.
		p := newTestPoller(t, quietConfig(1))
		if _, lerr := listenCounting(t, p, "127.0.0.1:0", ReusePort(true)); !errors.Is(lerr, ErrReusePort) {
			t.Fatalf("Listen with ReusePort on %s: %v, want ErrReusePort", runtime.GOOS, lerr)
		}
		return
	}
	p1 := newTestPoller(t, quietConfig(1))
	p2 := newTestPoller(t, quietConfig(1))
	ln1, err := listenCounting(t, p1, "127.0.0.1:0", ReusePort(true))
	if err != nil {
		t.Fatalf("Listen with ReusePort: %v", err)
	}
	addr := ln1.Addr().String()

	// The option lands on the listener's own fd: no dup, no extra fd.
	before := openFDs(t)
	ln2, err := listenCounting(t, p2, addr, ReusePort(true))
	if err != nil {
		t.Fatalf("second Listen with ReusePort on %s: %v", addr, err)
	}
	if d := openFDs(t) - before; d != 1 {
		t.Errorf("Listen opened %d file descriptors, want 1 (the listener)", d)
	}
	for _, ln := range []*Listener{ln1, ln2} {
		for _, opt := range []struct {
			name string
			opt  int
		}{{reusePortName, reusePortOption}, {"SO_REUSEADDR", unix.SO_REUSEADDR}} {
			v, err := unix.GetsockoptInt(ln.fd, unix.SOL_SOCKET, opt.opt)
			if err != nil || v == 0 {
				t.Errorf("listener fd %d: %s = %d, %v; want it set", ln.fd, opt.name, v, err)
			}
		}
	}

	// Each new connection goes to one listener by a hash of its source
	// port: with 200 of them, both get some (all on one: odds 2^-199).
	const n = 200
	dialAndClose(t, addr, n)
	testutil.CheckFor(t, 5*time.Second, func() error {
		a, b := ln1.Accepted.Load(), ln2.Accepted.Load()
		if a+b != n || a == 0 || b == 0 {
			return fmt.Errorf("accepted %d + %d, want %d in all and some on each", a, b, n)
		}
		return nil
	})
	t.Logf("%d connections: %d to the first listener, %d to the second", n, ln1.Accepted.Load(), ln2.Accepted.Load())

	// A listener without the option cannot join the group.
	p3 := newTestPoller(t, quietConfig(1))
	if _, err := listenCounting(t, p3, addr); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("Listen without ReusePort on %s shared by two: %v, want EADDRINUSE", addr, err)
	}

	// Once the first closes, the kernel stops routing to it.
	ln1.Close()
	got1, got2 := ln1.Accepted.Load(), ln2.Accepted.Load()
	dialAndClose(t, addr, 50)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if d := ln2.Accepted.Load() - got2; d != 50 {
			return fmt.Errorf("second listener accepted %d of 50 after the first closed", d)
		}
		return nil
	})
	if d := ln1.Accepted.Load() - got1; d != 0 {
		t.Errorf("closed listener accepted %d connections", d)
	}
}

// TestListenExclusiveByDefault: without ReusePort (or with it off) a second
// Listen on a bound port fails with EADDRINUSE, and so does one with
// ReusePort, since the first did not set it.
func TestListenExclusiveByDefault(t *testing.T) {
	p1 := newTestPoller(t, quietConfig(1))
	p2 := newTestPoller(t, quietConfig(1))
	ln, err := listenCounting(t, p1, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if v, err := unix.GetsockoptInt(ln.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || v != 0 {
		t.Errorf("default listener: SO_REUSEPORT = %d, %v; want 0", v, err)
	}
	if reusePortOption != 0 && reusePortOption != unix.SO_REUSEPORT {
		if v, err := unix.GetsockoptInt(ln.fd, unix.SOL_SOCKET, reusePortOption); err != nil || v != 0 {
			t.Errorf("default listener: %s = %d, %v; want 0", reusePortName, v, err)
		}
	}
	for _, tc := range []struct {
		name string
		opts []ListenOption
	}{
		{"no option", nil},
		{"ReusePort(false)", []ListenOption{ReusePort(false)}},
		{"ReusePort(true)", []ListenOption{ReusePort(true)}},
	} {
		var want error = unix.EADDRINUSE
		var o listenOptions
		for _, opt := range tc.opts {
			opt(&o)
		}
		if o.reusePort && CheckReusePort() != nil {
			want = ErrReusePort // refused before bind on this OS
		}
		_, err := listenCounting(t, p2, addr, tc.opts...)
		if !errors.Is(err, want) {
			t.Errorf("%s: second Listen on %s: %v, want %v", tc.name, addr, err, want)
		}
	}
	dialAndClose(t, addr, 5)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := ln.Accepted.Load(); n != 5 {
			return fmt.Errorf("first listener accepted %d of 5", n)
		}
		return nil
	})
}

// TestListenNoDelay: with NoDelay the sockets accepted from the listener
// have TCP_NODELAY without the AcceptFunc setting it (Linux copies it from
// the listener; elsewhere the listener sets it per accepted socket);
// without it they have Nagle's algorithm on, as the kernel makes them.
// Both with ReusePort too, which shares the Control hook (where it works).
func TestListenNoDelay(t *testing.T) {
	p := newTestPoller(t, quietConfig(1))
	for _, tc := range []struct {
		name string
		opts []ListenOption
		want int
	}{
		{"default", nil, 0},
		{"NoDelay", []ListenOption{NoDelay(true)}, 1},
		{"NoDelay+ReusePort", []ListenOption{NoDelay(true), ReusePort(true)}, 1},
		{"NoDelay(false)", []ListenOption{NoDelay(false)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.opts) == 2 && CheckReusePort() != nil {
				t.Skipf("no ReusePort on %s", runtime.GOOS)
			}
			got := make(chan int, 1)
			ln, err := p.Listen("127.0.0.1:0", func(fd int) {
				v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
				if err != nil {
					v = -1
				}
				unix.Close(fd)
				select {
				case got <- v:
				default:
				}
			}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			select {
			case v := <-got:
				if v != tc.want {
					t.Errorf("accepted socket: TCP_NODELAY = %d, want %d", v, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("nothing accepted")
			}
		})
	}
}
