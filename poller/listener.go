package poller

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AcceptFunc receives each accepted socket (non-blocking, close-on-exec).
// It runs on the engine's wait goroutine and must not block. It owns fd.
type AcceptFunc func(fd int)

// Listener is a listening socket served by the poller's readiness loop.
type Listener struct {
	p       *Poller
	ln      *net.TCPListener
	fd      int
	accept  AcceptFunc
	noDelay bool // set TCP_NODELAY on each accepted socket (where it is not inherited)

	mu      sync.Mutex
	closed  bool
	paused  bool
	backoff time.Duration

	// Accepted counts accepted sockets; AcceptErrors counts accept failures
	// that made the listener back off (EMFILE and the like).
	Accepted     atomic.Uint64
	AcceptErrors atomic.Uint64
	lastLog      atomic.Int64
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
	acceptBatch      = 256
)

// ListenOption tweaks one Listen call.
type ListenOption func(*listenOptions)

type listenOptions struct {
	reusePort bool
	noDelay   bool
}

// ReusePort, when on, sets SO_REUSEPORT on the listening socket before
// bind (net.Listen already sets SO_REUSEADDR there), so that several
// processes of the same user may listen on one address; the kernel then
// spreads new connections over their listeners by a hash of the
// connection's addresses. Every listener on the address must set it, or
// bind fails with EADDRINUSE as it does without it. When one of them
// closes, the connections that wait in its accept queue are reset (unless
// net.ipv4.tcp_migrate_req moves them to another listener of the group).
//
// That is Linux's and DragonFly's SO_REUSEPORT and FreeBSD's
// SO_REUSEPORT_LB (used there). On macOS, NetBSD and OpenBSD SO_REUSEPORT
// lets processes share the port but does not spread connections (one
// listener gets them all), so Listen refuses the option there with an
// error wrapping ErrReusePort; see CheckReusePort.
func ReusePort(on bool) ListenOption {
	return func(o *listenOptions) { o.reusePort = on }
}

// NoDelay, when on, sets TCP_NODELAY on the listening socket. Linux copies
// it into every socket accepted from it (the accepted socket is a clone of
// the listener's), so accepted connections start with Nagle's algorithm
// off without a setsockopt call each. On other systems the listener sets
// it on each accepted socket (one setsockopt per accept) rather than rely
// on an inheritance that is not documented there.
func NoDelay(on bool) ListenOption {
	return func(o *listenOptions) { o.noDelay = on }
}

// Listen opens a TCP listener on addr (as net.Listen understands it) and
// serves it from the readiness loop, calling accept for each new socket.
func (p *Poller) Listen(addr string, accept AcceptFunc, opts ...ListenOption) (*Listener, error) {
	var o listenOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.reusePort {
		if err := CheckReusePort(); err != nil {
			return nil, err
		}
	}
	var lc net.ListenConfig
	if o.reusePort || o.noDelay {
		// Control runs on the socket net created, before bind: the options
		// land on the listener's own fd, nothing is dup'ed.
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				if o.reusePort {
					if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, reusePortOption, 1); err != nil {
						serr = fmt.Errorf("poller: setsockopt %s: %w", reusePortName, err)
						return
					}
				}
				if o.noDelay {
					if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
						serr = fmt.Errorf("poller: setsockopt TCP_NODELAY: %w", err)
					}
				}
			}); err != nil {
				return err
			}
			return serr
		}
	}
	nl, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	tl := nl.(*net.TCPListener)
	rc, err := tl.SyscallConn()
	if err != nil {
		tl.Close()
		return nil, err
	}
	// Take the listener's own fd number (no dup). net.Listen made it
	// non-blocking; we accept on it ourselves and never call tl.Accept.
	var lfd int
	if err := rc.Control(func(fd uintptr) { lfd = int(fd) }); err != nil {
		tl.Close()
		return nil, err
	}
	l := &Listener{p: p, ln: tl, fd: lfd, accept: accept, noDelay: o.noDelay && !noDelayInherited}
	if err := p.ep.addListener(l); err != nil {
		tl.Close()
		return nil, fmt.Errorf("poller: register listener: %w", err)
	}
	p.mu.Lock()
	p.listeners = append(p.listeners, l)
	p.mu.Unlock()
	return l, nil
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting and closes the listening socket.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	_ = l.p.ep.delListener(l)
	return l.ln.Close()
}

// onEvent runs on the engine's wait goroutine. The listener is level-triggered, so
// whatever is left after one batch raises the event again.
func (l *Listener) onEvent(ev uint32) {
	if ev&evIn == 0 {
		return
	}
	for i := 0; i < acceptBatch; i++ {
		// Under mu, so that Close (on another goroutine) never closes the
		// listening fd while accept4 runs on it: the number could already
		// belong to another socket.
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		fd, err := accept4(l.fd)
		if err == nil {
			l.backoff = 0
		}
		l.mu.Unlock()
		if err == nil {
			if l.noDelay {
				// Not copied from the listener on this OS (a constant
				// false on Linux, where it is). A failure leaves Nagle on,
				// which is slower, not wrong.
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			}
			l.Accepted.Add(1)
			l.accept(fd)
			continue
		}
		switch err {
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
			continue
		default:
			// EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays
			// in the backlog. Stop polling the listener for a while instead
			// of spinning on a level-triggered event that cannot be served.
			l.pause(err)
			return
		}
	}
}

func (l *Listener) pause(err error) {
	l.AcceptErrors.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.paused {
		return
	}
	l.paused = true
	if l.backoff == 0 {
		l.backoff = minAcceptBackoff
	} else if l.backoff *= 2; l.backoff > maxAcceptBackoff {
		l.backoff = maxAcceptBackoff
	}
	_ = l.p.ep.setListener(l, false)
	now := time.Now().UnixNano()
	if last := l.lastLog.Load(); now-last > int64(time.Second) && l.lastLog.CompareAndSwap(last, now) {
		l.p.log.Warn("accept failed; backing off", "err", err, "backoff", l.backoff, "failures", l.AcceptErrors.Load())
	}
	time.AfterFunc(l.backoff, l.resume)
}

func (l *Listener) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.paused = false
	_ = l.p.ep.setListener(l, true)
}
