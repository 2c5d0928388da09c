package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The client's connect path. A load generator that shares the machine
// with the server takes CPU from it for every connection it opens, so the
// connect rate it measures is as much the client's as the server's. Go's
// net.Dialer costs ~50 µs of CPU per connection here (a context and a
// timer per dial, the keep-alive and no-delay socket options, getsockname
// and getpeername, an error check through getsockopt); this path costs
// the kernel's part of a loopback connect and little more: socket, bind
// (with a source address), connect, and the socket handed to Go's network
// poller through os.NewFile, one descriptor, no dup. The upgrade request
// is written right after connect: on loopback the handshake has usually
// finished when connect returns, and when it has not, the write waits in
// the poller for the socket to become writable (a connect that failed
// fails the write with its error, ECONNREFUSED and the like).

// Dialer opens client WebSockets for one goroutine at a time. Cancelling
// its context ends the dial in progress (its deadline is moved into the
// past) and every later one; the context's deadline bounds each dial as
// well. One context registration serves every dial of the Dialer, and one
// timer every dial's timeout: the timer is armed for the dial in progress
// and, when it fires, either ends that dial or, if a later one has taken
// its place meanwhile, waits for the later one's deadline. A dial that
// ends in time touches neither (a deadline set on the socket and cleared
// again would be two runtime timer updates per connection).
type Dialer struct {
	deadline time.Time // the context's, zero if none
	stop     func() bool

	mu        sync.Mutex
	cur       net.Conn  // the dial in progress
	curEnd    time.Time // its deadline, zero if none
	expired   bool      // cur's deadline passed: it was cut short
	cancelled bool
	timer     *time.Timer
	armedFor  time.Time // when timer fires, zero if it is not armed
	closed    bool
}

// NewDialer returns a Dialer bound to ctx; Close releases it.
func NewDialer(ctx context.Context) *Dialer {
	d := &Dialer{}
	d.deadline, _ = ctx.Deadline()
	if ctx.Err() != nil {
		d.cancelled = true
	} else if ctx.Done() != nil {
		d.stop = context.AfterFunc(ctx, d.cancel)
	}
	return d
}

// Close unregisters the Dialer from its context and stops its timer.
func (d *Dialer) Close() {
	if d.stop != nil {
		d.stop()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
}

func (d *Dialer) cancel() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cancelled = true
	if d.cur != nil {
		_ = d.cur.SetDeadline(time.Unix(1, 0))
	}
}

// expire runs on the timer: it cuts the dial in progress short if its
// deadline has passed, or waits for it.
func (d *Dialer) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armedFor = time.Time{}
	if d.cur == nil || d.curEnd.IsZero() || d.closed {
		return
	}
	if wait := time.Until(d.curEnd); wait > 0 {
		d.armLocked(d.curEnd)
		return
	}
	d.expired = true
	_ = d.cur.SetDeadline(time.Unix(1, 0))
}

func (d *Dialer) armLocked(at time.Time) {
	d.armedFor = at
	if d.timer == nil {
		d.timer = time.AfterFunc(time.Until(at), d.expire)
	} else {
		d.timer.Reset(time.Until(at))
	}
}

// begin records nc as the dial in progress, to end by deadline (zero:
// none); false if the Dialer was cancelled.
func (d *Dialer) begin(nc net.Conn, deadline time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancelled {
		return false
	}
	d.cur, d.curEnd, d.expired = nc, deadline, false
	if !deadline.IsZero() && (d.armedFor.IsZero() || deadline.Before(d.armedFor)) {
		d.armLocked(deadline)
	}
	return true
}

// end clears the dial in progress and says whether it was cut short
// (cancelled, or its deadline passed) meanwhile.
func (d *Dialer) end() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur, d.curEnd = nil, time.Time{}
	switch {
	case d.cancelled:
		return fmt.Errorf("%w: %w", ErrHandshake, context.Canceled)
	case d.expired:
		return fmt.Errorf("%w: %w", ErrHandshake, os.ErrDeadlineExceeded)
	}
	return nil
}

// Dial connects and completes the upgrade within o.Timeout (and the
// context's deadline).
func (d *Dialer) Dial(o DialOptions) (*Conn, error) {
	d.mu.Lock()
	cancelled := d.cancelled
	d.mu.Unlock()
	if cancelled {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, context.Canceled)
	}
	deadline := d.deadline
	if o.Timeout > 0 {
		if t := time.Now().Add(o.Timeout); deadline.IsZero() || t.Before(deadline) {
			deadline = t
		}
	}
	nc, err := dialSocket(o, deadline)
	if err != nil {
		return nil, err
	}
	if !d.begin(nc, deadline) {
		nc.Close()
		return nil, fmt.Errorf("%w: %w", ErrHandshake, context.Canceled)
	}
	size := o.ReadBuf
	if size <= 0 {
		size = 2 << 10
	}
	c := &Conn{nc: nc, br: bufio.NewReaderSize(nc, size)}
	err = c.handshake(o.Addr, o.Path)
	if cut := d.end(); cut != nil {
		// Cut short: the socket's deadline is in the past, whatever the
		// handshake managed meanwhile.
		nc.Close()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		return nil, cut
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// dialSocket opens the TCP connection: a raw socket when the address is
// an IP literal, net.Dialer otherwise (a host name to resolve).
func dialSocket(o DialOptions, deadline time.Time) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(o.Addr)
	if err != nil {
		ctx := context.Background()
		if !deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		return dialer(o).DialContext(ctx, "tcp", o.Addr)
	}
	return dialRawSocket(ap, o)
}

// dialRawSocket starts a non-blocking connect to ap and returns the socket
// as a net.Conn at once; the first write waits for the connect to finish.
func dialRawSocket(ap netip.AddrPort, o DialOptions) (net.Conn, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	family, sa := unix.AF_INET6, unix.Sockaddr(nil)
	if ap.Addr().Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	} else {
		sa = &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port()), ZoneId: zoneID(ap.Addr().Zone())}
	}
	fd, err := socketNonblock(family, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (net.Conn, error) {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(op, err)}
	}
	if err := presetSocket(fd, o); err != nil {
		return fail("setsockopt", err)
	}
	if o.LocalIP != nil {
		local, ok := netip.AddrFromSlice(o.LocalIP)
		if !ok {
			return fail("bind", unix.EINVAL)
		}
		local = local.Unmap()
		var lsa unix.Sockaddr
		switch {
		case local.Is4() && family == unix.AF_INET:
			lsa = &unix.SockaddrInet4{Addr: local.As4()}
		case local.Is6() && family == unix.AF_INET6:
			lsa = &unix.SockaddrInet6{Addr: local.As16()}
		default:
			return fail("bind", unix.EAFNOSUPPORT)
		}
		if err := unix.Bind(fd, lsa); err != nil {
			return fail("bind", err)
		}
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil && err != unix.EINPROGRESS {
		return fail("connect", err)
	}
	// A non-blocking fd: os.NewFile registers it with the runtime's
	// poller, so reads, writes and deadlines work as on a net.Conn.
	return &sockConn{File: os.NewFile(uintptr(fd), "tcp"), raddr: ap}, nil
}

func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// sockConn is a TCP socket opened by dialRawSocket, as a net.Conn.
type sockConn struct {
	*os.File
	raddr netip.AddrPort
}

func (c *sockConn) control(f func(fd int) error) error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// LocalAddr is the socket's bound address (getsockname, when asked).
func (c *sockConn) LocalAddr() net.Addr {
	var addr net.Addr = &net.TCPAddr{}
	_ = c.control(func(fd int) error {
		sa, err := unix.Getsockname(fd)
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			addr = &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
		case *unix.SockaddrInet6:
			addr = &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		}
		return err
	})
	return addr
}

// RemoteAddr is the address dialed.
func (c *sockConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.raddr) }

// CloseWrite shuts the socket down for writing (sends FIN).
func (c *sockConn) CloseWrite() error {
	return c.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// SetLinger sets SO_LINGER as net.TCPConn.SetLinger does.
func (c *sockConn) SetLinger(sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return c.control(func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

// tcpSocket is what half-closing and lingering need of a connection:
// *net.TCPConn and sockConn both have it.
type tcpSocket interface {
	net.Conn
	syscall.Conn
	CloseWrite() error
	SetLinger(sec int) error
}
