package poller

import (
	"errors"

	"github.com/mailru/easygo/netpoll"
)

// netpollEpoll is the netpoll engine on Linux: easygo's netpoll.Epoll on
// raw fds. (Not netpoll.Handle(conn), which takes conn.File(): a dup'ed fd
// per connection, and os.File.Fd() flips the socket to blocking; and not
// netpoll.NewDesc either, which wraps the fd in an os.File: a second
// registration in Go's own poller, a cleanup that closes the fd when the
// Desc is collected, and Fd() again on every Start and Stop.)
//
// What a registration costs beyond the epoll engine's table pointer: the
// callback closure that netpoll.Epoll.Add wants (it carries the *Desc,
// 16 bytes) and its entry in Epoll's map[int]func(EpollEvent) under a
// RWMutex that the wait loop takes for every batch of events.
type netpollEpoll struct {
	ep *netpoll.Epoll
}

func newNetpoll(onError func(error)) (engine, error) {
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: onError})
	if err != nil {
		return nil, err
	}
	return &netpollEpoll{ep: ep}, nil
}

func (e *netpollEpoll) addDesc(d *Desc) error {
	// The closure holds d itself, so an event that the wait loop took
	// before a Close reaches the old Desc (closed: ignored), never the
	// fd number's next owner.
	return e.add(int(d.fd), netpoll.EPOLLIN|netpoll.EPOLLOUT|netpoll.EPOLLRDHUP|netpoll.EPOLLET,
		func(ev netpoll.EpollEvent) { d.dispatch(uint32(ev)) })
}

// add registers fd. netpoll.Epoll.Add records the callback before
// epoll_ctl and keeps it when epoll_ctl fails: it is taken out again, or
// the fd number could never be registered again (ErrRegistered).
func (e *netpollEpoll) add(fd int, ev netpoll.EpollEvent, cb func(netpoll.EpollEvent)) error {
	err := e.ep.Add(fd, ev, cb)
	if err != nil && !errors.Is(err, netpoll.ErrRegistered) && !errors.Is(err, netpoll.ErrClosed) {
		_ = e.ep.Del(fd)
	}
	return err
}

func (e *netpollEpoll) delDesc(d *Desc) error { return e.ep.Del(int(d.fd)) }

func (e *netpollEpoll) addListener(l *Listener) error {
	// Level-triggered: what one accept batch leaves raises the event again.
	return e.add(l.fd, netpoll.EPOLLIN, func(ev netpoll.EpollEvent) { l.onEvent(uint32(ev)) })
}

func (e *netpollEpoll) setListener(l *Listener, on bool) error {
	var ev netpoll.EpollEvent
	if on {
		ev = netpoll.EPOLLIN
	}
	return e.ep.Mod(l.fd, ev)
}

func (e *netpollEpoll) delListener(l *Listener) error { return e.ep.Del(l.fd) }

// close stops netpoll's wait loop (through its eventfd) and waits for it.
// netpoll then calls every callback still registered once with its
// "closed" bit (0x20), which carries none of the ev* bits: ignored.
func (e *netpollEpoll) close() error { return e.ep.Close() }
