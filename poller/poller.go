package poller

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Errors returned by the poller.
var (
	ErrClosed = errors.New("poller: closed")
)

// Config configures a Poller. The zero value is usable: every zero field
// means the documented default.
type Config struct {
	// Workers is the number of worker goroutines. Zero means GOMAXPROCS.
	Workers int
	// QueueSize is the capacity of the job queue. Zero means 65536.
	QueueSize int
	// ReadBufferSize is each worker's read buffer. Zero means 64 KiB.
	ReadBufferSize int
	// ReadBudget is how many bytes one job reads from one descriptor before
	// it yields the worker to others (fairness). Zero means 4 reads' worth.
	ReadBudget int
	// Engine is the readiness loop: EngineEpoll (Linux only) or
	// EngineNetpoll (easygo's netpoll: epoll on Linux, kqueue on macOS and
	// the BSDs). Empty means DefaultEngine(): epoll on Linux, netpoll
	// elsewhere.
	Engine string
	// Logger receives rare operational messages. Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 65536
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 64 << 10
	}
	if c.ReadBudget <= 0 {
		c.ReadBudget = 4 * c.ReadBufferSize
	}
	if c.Engine == "" {
		c.Engine = defaultEngine
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.Workers < 0 || c.QueueSize < 0 || c.ReadBufferSize < 0 || c.ReadBudget < 0 {
		return fmt.Errorf("poller: negative value in Config")
	}
	return CheckEngine(c.Engine)
}

// Poller owns one readiness loop (the engine) and the worker pool.
type Poller struct {
	cfg    Config
	ep     engine
	queue  chan task
	wg     sync.WaitGroup
	closed atomic.Bool
	log    *slog.Logger

	mu        sync.Mutex
	listeners []*Listener

	// Tasks that found the queue full (see push).
	overflowMu sync.Mutex
	overflow   []task
	overflowN  atomic.Int32
}

// task is one unit of work: either a descriptor to run or a function.
type task struct {
	d *Desc
	f func(*Worker)
}

// New starts the engine's readiness loop and the workers.
func New(cfg Config) (*Poller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Poller{
		cfg:   cfg,
		queue: make(chan task, cfg.QueueSize),
		log:   cfg.Logger,
	}
	ep, err := newEngine(cfg.Engine, func(err error) { p.log.Error("poller: wait failed", "engine", cfg.Engine, "err", err) })
	if err != nil {
		return nil, fmt.Errorf("poller: %s: %w", cfg.Engine, err)
	}
	p.ep = ep
	for i := 0; i < cfg.Workers; i++ {
		w := &Worker{buf: make([]byte, cfg.ReadBufferSize)}
		p.wg.Add(1)
		go p.work(w)
	}
	return p, nil
}

// Engine returns the name of the engine in use.
func (p *Poller) Engine() string { return p.cfg.Engine }

// Workers returns the number of worker goroutines.
func (p *Poller) Workers() int { return p.cfg.Workers }

// Close stops the listeners, the readiness loop and the workers. Registered
// descriptors are not closed; the owner closes them before calling Close.
func (p *Poller) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	p.mu.Lock()
	lns := p.listeners
	p.listeners = nil
	p.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	err := p.ep.close()
	close(p.queue)
	p.wg.Wait()
	return err
}

// Submit runs f on a worker. It never blocks (see push).
func (p *Poller) Submit(f func(*Worker)) {
	p.push(task{f: f})
}

// push queues t without blocking and without starting a goroutine. When the
// queue is full, t waits in an overflow list, which the workers move back
// into the queue, in order, as it empties; so a worker that submits fan-out
// jobs can never deadlock against a full queue. The list is bounded by what
// can be pending at once: one job per descriptor (a Desc is queued at most
// once), and per room one fan-out with its chunk jobs.
func (p *Poller) push(t task) {
	if p.closed.Load() {
		return
	}
	defer func() {
		// The queue is closed only by Close; a push racing with it is dropped.
		_ = recover()
	}()
	if p.overflowN.Load() == 0 {
		select {
		case p.queue <- t:
			return
		default:
		}
	}
	p.overflowMu.Lock()
	p.overflow = append(p.overflow, t)
	p.overflowN.Add(1)
	p.overflowMu.Unlock()
	// If the workers emptied the queue meanwhile and wait on it, this moves
	// the overflow back; if it is still full, they do after their tasks.
	p.refill()
}

// refill moves overflow tasks into the queue while it has room.
func (p *Poller) refill() {
	defer func() {
		_ = recover() // the queue was closed by Close: the tasks are dropped
	}()
	p.overflowMu.Lock()
	defer p.overflowMu.Unlock()
	n := 0
	for ; n < len(p.overflow); n++ {
		select {
		case p.queue <- p.overflow[n]:
			p.overflow[n] = task{}
			continue
		default:
		}
		break
	}
	p.overflow = p.overflow[n:]
	if len(p.overflow) == 0 {
		p.overflow = nil
	}
	p.overflowN.Add(int32(-n))
}

// Worker is one pool goroutine. Its buffer is reused for every read.
type Worker struct {
	buf []byte
}

func (p *Poller) work(w *Worker) {
	defer p.wg.Done()
	for t := range p.queue {
		p.run(w, t)
		if p.overflowN.Load() > 0 {
			p.refill()
		}
	}
}

func (p *Poller) run(w *Worker, t task) {
	switch {
	case t.d != nil:
		t.d.run(w)
	case t.f != nil:
		p.runFunc(w, t.f)
	}
}

func (p *Poller) runFunc(w *Worker, f func(*Worker)) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("poller: job panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	f(w)
}

// ignoreEINTR retries a syscall interrupted by a signal.
func ignoreEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}
