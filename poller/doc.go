// Package poller is chatd's I/O engine: a listener, a readiness loop on
// raw file descriptors and a fixed pool of worker goroutines.
//
// # Engines
//
// The loop is one of two engines behind the same API (Config.Engine):
//
//   - "epoll" (Linux only, the default there): chatd's own loop, which
//     finds a descriptor's Desc in a table indexed by fd number (epoll.go),
//     so a registered connection costs one pointer there and nothing else.
//   - "netpoll": github.com/mailru/easygo/netpoll on raw fds, epoll on
//     Linux (netpoll_linux.go) and kqueue on macOS, FreeBSD and DragonFly
//     (netpoll_kqueue.go); the default there. A registration costs a
//     callback closure and an entry in netpoll's map on top.
//
// Both are edge-triggered for connections and level-triggered for
// listeners, hand the same readiness bits to the same dispatch, and so
// give the same guarantees. What else differs by OS: accept4(2) where it
// exists, else accept + fcntl under syscall.ForkLock; writev(2) as a raw
// system call, or through libc on macOS; TCP_NODELAY inherited from the
// listener on Linux, set per accepted socket elsewhere; ReusePort only
// where the kernel spreads connections (CheckReusePort). NetBSD and
// OpenBSD are not supported: easygo's netpoll does not build there.
//
// It knows file descriptors and bytes only. It never imports a WebSocket or
// chat package; the layer above implements Handler.
//
// # Usage
//
//	p, _ := poller.New(poller.Config{Workers: 2})
//	ln, _ := p.Listen(":8080", func(fd int) {
//		c := &myConn{} // embeds a poller.Desc
//		err := p.Register(&c.desc, fd, c)
//		...
//	})
//	defer p.Close()
//
// # Goroutines and callbacks
//
// One goroutine (the wait loop) calls epoll_wait or kevent and only
// dispatches: it
// accepts new sockets (calling the AcceptFunc on that goroutine, so it must
// not block) and marks descriptors ready. A ready descriptor is run as one
// job on the worker pool; a descriptor is never run by two workers at once,
// so a Handler's callbacks for one Desc are serialized and never concurrent
// with each other. Bytes handed to Handler.OnData are the worker's buffer:
// they are valid until the callback returns.
//
// Descriptors are registered edge-triggered for EPOLLIN|EPOLLOUT|EPOLLRDHUP
// (kqueue: EVFILT_READ and EVFILT_WRITE with EV_CLEAR), so no epoll_ctl
// call is needed after registration: EPOLLOUT fires only after a write hit
// EAGAIN and the socket drained, which is exactly when a queued writer
// wants to flush.
//
// Desc.Close must be called from one of that Desc's own callbacks (the only
// place where no other worker can be reading the fd), which guarantees a
// closed fd number is never read after the kernel hands it to a new socket.
// Other goroutines ask for attention with Desc.Wake, which runs OnWake.
//
// Desc.Write and Desc.Writev may be called from any goroutine; the caller
// serializes writes per descriptor (the server holds a per-connection lock).
package poller
