package poller

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Handler receives a descriptor's events on a worker goroutine. Callbacks for
// one Desc are never concurrent with each other.
type Handler interface {
	// OnData is called with bytes read from the socket. p is the worker's
	// buffer: valid until OnData returns.
	OnData(w *Worker, p []byte)
	// OnWritable is called when the socket accepts writes again after a
	// write returned less than asked.
	OnWritable(w *Worker)
	// OnWake is called after Desc.Wake.
	OnWake(w *Worker)
	// OnHangup is called once when the peer closed (err == nil: EOF) or the
	// socket failed, or a callback panicked (err is a *PanicError). No
	// OnData follows. The handler should Close the Desc.
	OnHangup(w *Worker, err error)
}

// PanicError is passed to OnHangup when a callback panicked.
type PanicError struct {
	Value any
	Stack []byte // the panicking goroutine's stack (runtime/debug.Stack)
}

func (e *PanicError) Error() string { return fmt.Sprintf("poller: handler panic: %v", e.Value) }

// Desc state bits.
const (
	stRead   = 1 << iota // readable or hung up since last run
	stWrite              // writable since last run
	stWake               // Wake called
	stSched              // queued or running
	stClosed             // Close called
	stHup                // OnHangup delivered
	stEOF                // the peer shut down its side (EPOLLRDHUP/HUP/ERR seen); sticky
	stPaused             // PauseRead: read nothing until ResumeRead
)

// Desc is a registered descriptor. Its memory is the caller's: a server
// embeds one in its per-connection struct, so that a connection at rest is
// one object (32 bytes of it are the Desc) plus a pointer in the poller's
// fd table. A Desc is used for one fd only; after Close or Detach it is
// not registered again.
type Desc struct {
	h     Handler
	p     *Poller
	fd    int32 // file descriptor numbers are below RLIMIT_NOFILE, an int32
	state atomic.Uint32
}

// Register adds fd (a connected, non-blocking socket) to the poller, as d,
// which must be a zero Desc that stays where it is (embedded in the
// handler's connection struct, say). From now on d owns fd: it is closed
// by Desc.Close.
func (p *Poller) Register(d *Desc, fd int, h Handler) error {
	d.fd, d.h, d.p = int32(fd), h, p
	if err := p.ep.addDesc(d); err != nil {
		return fmt.Errorf("poller: register fd %d: %w", fd, err)
	}
	return nil
}

// Adopt registers fd as d like Register, for a socket whose first bytes
// were read elsewhere (a connection taken back from net/http). bind is
// called once d is usable (Wake, Close) and before any callback can run;
// then OnWake is called on a worker, where the handler takes up the bytes
// it was given.
func (p *Poller) Adopt(d *Desc, fd int, h Handler, bind func()) error {
	d.fd, d.h, d.p = int32(fd), h, p
	// Marked as queued until the first job is pushed below, so events that
	// arrive meanwhile only record their bits.
	d.state.Store(stSched | stWake)
	bind()
	if err := p.ep.addDesc(d); err != nil {
		return fmt.Errorf("poller: register fd %d: %w", fd, err)
	}
	p.push(task{d: d})
	return nil
}

// Fd returns the descriptor number (for logging and socket options).
func (d *Desc) Fd() int { return int(d.fd) }

// dispatch runs on the engine's wait goroutine: it records readiness (the
// ev* bits) and queues the descriptor unless it is already queued or
// running.
func (d *Desc) dispatch(ev uint32) {
	var bits uint32
	if ev&(evIn|evRdHup|evHup|evErr) != 0 {
		bits |= stRead
	}
	if ev&(evRdHup|evHup|evErr) != 0 {
		// The end of the stream may sit right behind data that arrived in
		// the same edge: remember it, so read goes on past a short read.
		bits |= stEOF
	}
	if ev&evOut != 0 {
		bits |= stWrite
	}
	if bits == 0 {
		return
	}
	d.schedule(bits)
}

func (d *Desc) schedule(bits uint32) {
	old := d.state.Or(bits | stSched)
	if old&(stSched|stClosed) == 0 {
		d.p.push(task{d: d})
	}
}

// Wake asks for OnWake to be called on a worker. Safe from any goroutine.
func (d *Desc) Wake() { d.schedule(stWake) }

// PauseRead stops reading the socket (backpressure on a fast producer):
// no OnData follows until ResumeRead. Bytes keep arriving into the kernel's
// receive buffer, and TCP flow control slows the peer once it is full.
// Writes, wakes and hang-ups are still delivered. Safe from any goroutine.
func (d *Desc) PauseRead() { d.state.Or(stPaused) }

// ResumeRead undoes PauseRead and schedules a read of whatever arrived
// meanwhile (edge triggering raises no new event for bytes already there).
// Safe from any goroutine.
func (d *Desc) ResumeRead() {
	if d.state.And(^uint32(stPaused))&stPaused != 0 {
		d.schedule(stRead)
	}
}

// Closed reports whether Close was called.
func (d *Desc) Closed() bool { return d.state.Load()&stClosed != 0 }

// run is one job: it handles every pending event, then releases the Desc.
func (d *Desc) run(w *Worker) {
	for {
		st := d.state.And(^uint32(stRead | stWrite | stWake))
		if st&stClosed != 0 {
			return
		}
		more := d.handle(w, st)
		if d.state.Load()&stClosed != 0 {
			return
		}
		if more {
			// Read budget spent: requeue behind the others.
			d.state.Or(stRead)
			d.p.push(task{d: d})
			return
		}
		if d.state.CompareAndSwap(st&^(stRead|stWrite|stWake), st&^(stRead|stWrite|stWake|stSched)) {
			return
		}
		// New events arrived while running; handle them in this job.
	}
}

// handle processes one snapshot of events. It reports whether the read
// budget ran out with data possibly left in the socket.
func (d *Desc) handle(w *Worker, st uint32) (more bool) {
	defer func() {
		if r := recover(); r != nil {
			more = false
			d.hangup(w, &PanicError{Value: r, Stack: debug.Stack()})
		}
	}()
	if st&stWrite != 0 {
		d.h.OnWritable(w)
	}
	if st&stWake != 0 && d.state.Load()&stClosed == 0 {
		d.h.OnWake(w)
	}
	if st&stRead != 0 && st&(stHup|stPaused) == 0 {
		return d.read(w)
	}
	return false
}

func (d *Desc) read(w *Worker) (more bool) {
	budget := d.p.cfg.ReadBudget
	for budget > 0 && d.state.Load()&(stClosed|stHup) == 0 {
		n, err := ignoreEINTR(func() (int, error) { return unix.Read(int(d.fd), w.buf) })
		switch {
		case n > 0:
			budget -= n
			d.h.OnData(w, w.buf[:n])
			if st := d.state.Load(); st&stPaused != 0 {
				return false // ResumeRead schedules the next read
			} else if n < len(w.buf) && st&stEOF == 0 {
				// A short read drained the socket; with edge triggering any
				// byte that arrives later raises a new event. A FIN that came
				// with the data raised no edge of its own: with stEOF set the
				// loop reads on to the end of the stream (or EAGAIN).
				return false
			}
		case err == unix.EAGAIN:
			return false
		case err == nil:
			d.hangup(w, nil)
			return false
		default:
			d.hangup(w, err)
			return false
		}
	}
	return budget <= 0 && d.state.Load()&(stClosed|stHup) == 0
}

func (d *Desc) hangup(w *Worker, err error) {
	if d.state.Or(stHup)&stHup != 0 {
		// A second failure (e.g. OnHangup itself panicked): just close.
		d.Close()
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.p.log.Error("poller: OnHangup panicked", "panic", r, "stack", string(debug.Stack()))
			d.Close()
		}
	}()
	d.h.OnHangup(w, err)
}

// Close removes the descriptor from the engine and closes it. It must be called
// from one of the Desc's own callbacks (see the package doc). Idempotent.
func (d *Desc) Close() error {
	if d.state.Or(stClosed)&stClosed != 0 {
		return nil
	}
	// Remove from the engine before close: an epoll registration belongs
	// to the open file description, not the number, and netpoll's map of
	// callbacks is keyed by the number.
	_ = d.p.ep.delDesc(d)
	return unix.Close(int(d.fd))
}

// Detach removes the descriptor from the engine without closing it, handing the
// fd to the caller (used to pass a plain HTTP connection to net/http). Like
// Close, it must be called from one of the Desc's callbacks.
func (d *Desc) Detach() (fd int, err error) {
	if d.state.Or(stClosed)&stClosed != 0 {
		return -1, ErrClosed
	}
	return int(d.fd), d.p.ep.delDesc(d)
}

// Shutdown half-closes the socket for writing (sends FIN after queued data).
func (d *Desc) Shutdown() error { return unix.Shutdown(int(d.fd), unix.SHUT_WR) }

// Write writes b without blocking. It returns the number of bytes the kernel
// took; n < len(b) with a nil error means the socket buffer is full and
// OnWritable will follow.
func (d *Desc) Write(b []byte) (int, error) {
	n, err := ignoreEINTR(func() (int, error) { return unix.Write(int(d.fd), b) })
	if err == unix.EAGAIN {
		return 0, nil
	}
	if n < 0 {
		n = 0
	}
	return n, err
}
