//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package poller

import (
	"errors"
	"runtime"
	"sync"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// netpollKqueue is the netpoll engine on macOS and the BSDs: easygo's
// netpoll.Kqueue on raw fds (see netpoll_linux.go for why neither
// netpoll.Handle nor netpoll.NewDesc). A connection is registered for
// EVFILT_READ and EVFILT_WRITE with EV_CLEAR, kqueue's edge triggering;
// a listener for EVFILT_READ without it (level).
//
// netpoll.Kqueue has no working Close (it is a no-op in the version we
// use) and its wait loop ends only on an event whose ident is -1. So the
// engine registers the read end of a pipe; close marks the engine closed
// (no call reaches the Kqueue after that), writes a byte, and the pipe's
// callback ends the wait goroutine with runtime.Goexit, which runs the
// loop's deferred cleanup: it closes the kqueue. The pipe is the kqueue
// wake-up that Linux does with an eventfd.
type netpollKqueue struct {
	kq   *netpoll.Kqueue
	wake [2]int        // pipe: close writes to wake[1]
	done chan struct{} // closed once the wait loop ends (stopped)
	stop sync.Once

	// mu guards closed; every call into kq is made under it, so none
	// runs on a kqueue fd that the wait loop has closed (its number may
	// belong to another file by then).
	mu     sync.RWMutex
	closed bool
}

func newNetpoll(onError func(error)) (engine, error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return nil, err
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(p[0])
			unix.Close(p[1])
			return nil, err
		}
	}
	e := &netpollKqueue{wake: p, done: make(chan struct{})}
	// The wait loop also ends after a kevent error it cannot retry
	// (reported through OnWaitError): close must not wait for it then.
	kq, err := netpoll.KqueueCreate(&netpoll.KqueueConfig{OnWaitError: func(err error) {
		onError(err)
		e.stopped()
	}})
	if err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	e.kq = kq
	var evs netpoll.Kevents
	evs[0] = netpoll.Kevent{Filter: netpoll.EVFILT_READ, Flags: netpoll.EV_ADD}
	if err := kq.Add(p[0], evs, 1, func(netpoll.Kevent) {
		e.stopped()
		runtime.Goexit()
	}); err != nil {
		// The wait loop cannot be stopped without the pipe: it is left
		// waiting on an empty kqueue.
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	return e, nil
}

func (e *netpollKqueue) stopped() { e.stop.Do(func() { close(e.done) }) }

// kevents builds the change list for a connection (read and write) or a
// listener (read only) with flags.
func kevents(conn bool, flags netpoll.KeventFlag) (evs netpoll.Kevents, n int) {
	evs[0] = netpoll.Kevent{Filter: netpoll.EVFILT_READ, Flags: flags}
	n = 1
	if conn {
		evs[1] = netpoll.Kevent{Filter: netpoll.EVFILT_WRITE, Flags: flags}
		n = 2
	}
	return evs, n
}

// kevBits maps one kevent onto the ev* bits: EV_EOF (the peer shut down,
// or the socket failed: the error is in fflags, and read returns it) is
// evRdHup, so the next read goes on to the end of the stream.
func kevBits(k netpoll.Kevent) uint32 {
	var ev uint32
	switch k.Filter {
	case netpoll.EVFILT_READ:
		ev = evIn
	case netpoll.EVFILT_WRITE:
		ev = evOut
	}
	if k.Flags&netpoll.EV_EOF != 0 {
		ev |= evRdHup
	}
	if k.Flags&netpoll.EV_ERROR != 0 {
		ev |= evErr
	}
	return ev
}

var errKqueueClosed = errors.New("poller: kqueue closed")

func (e *netpollKqueue) add(fd int, conn bool, flags netpoll.KeventFlag, cb netpoll.KeventHandler) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return errKqueueClosed
	}
	evs, n := kevents(conn, flags)
	err := e.kq.Add(fd, evs, n, cb)
	if err != nil && !errors.Is(err, netpoll.ErrRegistered) {
		// Kqueue.Add records the callback before kevent(2) and keeps it
		// when that fails.
		_ = e.kq.Del(fd)
	}
	return err
}

func (e *netpollKqueue) mod(fd int, conn bool, flags netpoll.KeventFlag) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return errKqueueClosed
	}
	evs, n := kevents(conn, flags)
	return e.kq.Mod(fd, evs, n)
}

// del removes fd's filters and then its callback. (Closing an fd removes
// its filters too, but Detach hands the fd on open; and Mod needs the
// callback still registered, so the order matters.)
func (e *netpollKqueue) del(fd int, conn bool) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return errKqueueClosed
	}
	evs, n := kevents(conn, netpoll.EV_DELETE)
	err := e.kq.Mod(fd, evs, n)
	if derr := e.kq.Del(fd); err == nil {
		err = derr
	}
	return err
}

func (e *netpollKqueue) addDesc(d *Desc) error {
	// As on Linux, the closure holds d, not the fd number.
	return e.add(int(d.fd), true, netpoll.EV_ADD|netpoll.EV_CLEAR,
		func(k netpoll.Kevent) { d.dispatch(kevBits(k)) })
}

func (e *netpollKqueue) delDesc(d *Desc) error { return e.del(int(d.fd), true) }

func (e *netpollKqueue) addListener(l *Listener) error {
	return e.add(l.fd, false, netpoll.EV_ADD, func(k netpoll.Kevent) { l.onEvent(kevBits(k)) })
}

func (e *netpollKqueue) setListener(l *Listener, on bool) error {
	flags := netpoll.KeventFlag(netpoll.EV_DISABLE)
	if on {
		flags = netpoll.EV_ENABLE
	}
	return e.mod(l.fd, false, flags)
}

func (e *netpollKqueue) delListener(l *Listener) error { return e.del(l.fd, false) }

func (e *netpollKqueue) close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errKqueueClosed
	}
	e.closed = true
	e.mu.Unlock()
	if _, err := unix.Write(e.wake[1], []byte{1}); err != nil {
		return err
	}
	<-e.done
	unix.Close(e.wake[1])
	return unix.Close(e.wake[0])
}
