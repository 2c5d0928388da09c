//go:build linux

package poller

import (
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// epoll is the readiness loop: one epoll instance and one goroutine that
// waits on it and dispatches each event to whatever is registered on the
// fd. A registration costs one pointer in a table indexed by fd number:
// file descriptors are small dense integers, so the table needs no hashing,
// and the wait loop reads it without a lock. (easygo's netpoll.Epoll, used
// before, kept a callback per fd in a map under a RWMutex: a closure and a
// map entry per connection, some 50 bytes, and a lock taken by every wait
// and every registration.)
//
// Events carry the fd and a tag in the 64-bit user data of epoll_event
// (unix.EpollEvent's Fd and Pad): tagDesc for a connection (looked up in
// the table), tagListener for a listening socket (few, looked up in a map
// under mu) and tagWake for the eventfd that Close writes to stop the loop.
type epoll struct {
	fd     int
	wakeFd int
	done   chan struct{}

	// mu serializes registrations: every write to descs (and its growth)
	// and to lns is made under it. The wait loop reads descs without it.
	// Lock order: Listener.mu before mu (Listener.Close, pause and resume
	// hold theirs while they change the registration); the wait loop
	// releases mu before it calls Listener.onEvent.
	mu     sync.Mutex
	closed bool
	descs  atomic.Pointer[[]atomic.Pointer[Desc]]
	lns    map[int]*Listener
}

// Tags in unix.EpollEvent.Pad.
const (
	tagDesc int32 = iota
	tagListener
	tagWake
)

// errEpollClosed is returned by registrations after close.
var errEpollClosed = errors.New("poller: epoll closed")

// initialDescs is the table's first size; it doubles as fds grow past it.
const initialDescs = 1024

// evET asks epoll for edge-triggered events.
const evET = uint32(unix.EPOLLET)

// The portable ev* bits (engine.go) are epoll's: the array's length is
// zero only if every pair is equal, so this fails to compile otherwise.
var _ [0]struct{} = [evIn ^ unix.EPOLLIN | evOut ^ unix.EPOLLOUT | evErr ^ unix.EPOLLERR |
	evHup ^ unix.EPOLLHUP | evRdHup ^ unix.EPOLLRDHUP]struct{}{}

func newEpoll(onError func(error)) (*epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: evIn, Fd: int32(wfd), Pad: tagWake}
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(fd)
		unix.Close(wfd)
		return nil, err
	}
	e := &epoll{fd: fd, wakeFd: wfd, done: make(chan struct{}), lns: make(map[int]*Listener)}
	tab := make([]atomic.Pointer[Desc], initialDescs)
	e.descs.Store(&tab)
	go e.wait(onError)
	return e, nil
}

// addDesc registers a connection's fd, edge-triggered for reads, writes
// and the peer's shutdown.
func (e *epoll) addDesc(d *Desc) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEpollClosed
	}
	fd := int(d.fd)
	tab := *e.descs.Load()
	if fd >= len(tab) {
		n := len(tab)
		for n <= fd {
			n *= 2
		}
		grown := make([]atomic.Pointer[Desc], n)
		for i := range tab {
			grown[i].Store(tab[i].Load())
		}
		e.descs.Store(&grown)
		tab = grown
	}
	// Stored before epoll_ctl: the first event may come at once.
	tab[fd].Store(d)
	ev := unix.EpollEvent{Events: evIn | evOut | evRdHup | evET, Fd: d.fd, Pad: tagDesc}
	if err := unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		tab[fd].Store(nil)
		return err
	}
	return nil
}

// delDesc removes a connection's fd from epoll and from the table.
func (e *epoll) delDesc(d *Desc) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEpollClosed
	}
	// Only the entry that is d's: after a failed addDesc another Desc may
	// hold the number.
	fd := int(d.fd)
	if tab := *e.descs.Load(); fd < len(tab) {
		tab[fd].CompareAndSwap(d, nil)
	}
	return unix.EpollCtl(e.fd, unix.EPOLL_CTL_DEL, fd, nil)
}

// addListener registers a listening socket, level-triggered for reads.
func (e *epoll) addListener(l *Listener) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEpollClosed
	}
	e.lns[l.fd] = l
	ev := unix.EpollEvent{Events: evIn, Fd: int32(l.fd), Pad: tagListener}
	if err := unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, l.fd, &ev); err != nil {
		delete(e.lns, l.fd)
		return err
	}
	return nil
}

// setListener sets the events a listener waits for (none, while it backs
// off; evIn: accepting).
func (e *epoll) setListener(l *Listener, on bool) error {
	var events uint32
	if on {
		events = evIn
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEpollClosed
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(l.fd), Pad: tagListener}
	return unix.EpollCtl(e.fd, unix.EPOLL_CTL_MOD, l.fd, &ev)
}

func (e *epoll) delListener(l *Listener) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEpollClosed
	}
	delete(e.lns, l.fd)
	return unix.EpollCtl(e.fd, unix.EPOLL_CTL_DEL, l.fd, nil)
}

func (e *epoll) listener(fd int) *Listener {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lns[fd]
}

// maxEvents bounds the event buffer, which doubles from 1024 whenever a
// wait fills it.
const maxEvents = 32768

// wait is the loop. Listener events run the accept batch here; connection
// events only mark the Desc ready and queue it (Desc.dispatch).
func (e *epoll) wait(onError func(error)) {
	defer close(e.done)
	events := make([]unix.EpollEvent, 1024)
	for {
		n, err := unix.EpollWait(e.fd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			onError(err)
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			fd := int(ev.Fd)
			switch ev.Pad {
			case tagWake:
				return
			case tagListener:
				if l := e.listener(fd); l != nil {
					l.onEvent(ev.Events)
				}
			default:
				// Loaded per event, after epoll_wait returned it: the
				// registration stored the Desc (in the table then current)
				// before epoll_ctl, so this load sees it, even when the
				// table grew since the previous event.
				if tab := *e.descs.Load(); fd < len(tab) {
					if d := tab[fd].Load(); d != nil {
						d.dispatch(ev.Events)
					}
				}
			}
		}
		if n == len(events) && 2*n <= maxEvents {
			events = make([]unix.EpollEvent, 2*n)
		}
	}
}

// close stops the wait loop and closes the epoll instance.
func (e *epoll) close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errEpollClosed
	}
	e.closed = true
	e.mu.Unlock()
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(e.wakeFd, one); err != nil {
		return err
	}
	<-e.done
	unix.Close(e.wakeFd)
	return unix.Close(e.fd)
}
