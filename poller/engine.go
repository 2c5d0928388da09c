package poller

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// Engine names, the values of Config.Engine.
const (
	// EngineEpoll is chatd's own epoll loop (epoll.go): a Desc is found by
	// fd number in a table, one pointer per connection. Linux only.
	EngineEpoll = "epoll"
	// EngineNetpoll is github.com/mailru/easygo/netpoll on raw fds: epoll
	// on Linux, kqueue on macOS and the BSDs. A registration costs a
	// callback closure and an entry in netpoll's map (netpoll_*.go).
	EngineNetpoll = "netpoll"
)

// ErrEngine is wrapped by the error for an engine that is unknown or not
// built for this operating system.
var ErrEngine = errors.New("poller: engine")

// DefaultEngine is the engine a zero Config.Engine means: epoll on Linux,
// netpoll elsewhere.
func DefaultEngine() string { return defaultEngine }

// Engines lists the engines this operating system has, the default first.
func Engines() []string { return append([]string(nil), engines...) }

// CheckEngine reports whether name is an engine of this operating system
// ("" means DefaultEngine). The error wraps ErrEngine.
func CheckEngine(name string) error {
	if name == "" {
		return nil
	}
	for _, e := range engines {
		if name == e {
			return nil
		}
	}
	want := strings.Join(engines, " or ")
	if name == EngineEpoll || name == EngineNetpoll {
		return fmt.Errorf("%w %q is not available on %s (want %s)", ErrEngine, name, runtime.GOOS, want)
	}
	return fmt.Errorf("%w %q is unknown (want %s)", ErrEngine, name, want)
}

// engine is a readiness loop: one goroutine that waits for events on the
// registered fds and calls Desc.dispatch or Listener.onEvent with the
// ev* bits below. Both run on that goroutine and must not block.
type engine interface {
	// addDesc registers a connection, edge-triggered for reads, writes
	// and the peer's shutdown.
	addDesc(d *Desc) error
	// delDesc removes a connection; the fd stays open (Close closes it
	// after, Detach hands it on).
	delDesc(d *Desc) error
	// addListener registers a listening socket, level-triggered for
	// reads.
	addListener(l *Listener) error
	// setListener turns a listener's read events on (accepting) or off
	// (backing off after EMFILE and the like).
	setListener(l *Listener, on bool) error
	delListener(l *Listener) error
	// close stops the loop; no callback runs after it returns.
	close() error
}

// Readiness bits as the engines hand them to Desc.dispatch and
// Listener.onEvent. They have epoll's values (epoll.go checks it at
// compile time), so the Linux engines pass epoll_event.events through as
// they are; kqueue's filters and flags are mapped onto them.
const (
	evIn    = 0x1    // readable (EPOLLIN; EVFILT_READ)
	evOut   = 0x4    // writable (EPOLLOUT; EVFILT_WRITE)
	evErr   = 0x8    // socket error (EPOLLERR; EV_ERROR)
	evHup   = 0x10   // both directions shut (EPOLLHUP)
	evRdHup = 0x2000 // the peer shut down its side (EPOLLRDHUP; EV_EOF)
)
