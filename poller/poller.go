package poller

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/mailru/easygo/netpoll"
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
	return nil
}

// Poller owns one epoll instance and the worker pool.
type Poller struct {
	cfg    Config
	ep     *netpoll.Epoll
	queue  chan task
	wg     sync.WaitGroup
	closed atomic.Bool
	log    *slog.Logger

	mu        sync.Mutex
	listeners []*Listener
}

// task is one unit of work: either a descriptor to run or a function.
type task struct {
	d *Desc
	f func(*Worker)
}

// New creates the epoll instance and starts the workers.
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
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{
		OnWaitError: func(err error) { p.log.Error("epoll wait failed", "err", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("poller: epoll_create: %w", err)
	}
	p.ep = ep
	for i := 0; i < cfg.Workers; i++ {
		w := &Worker{buf: make([]byte, cfg.ReadBufferSize)}
		p.wg.Add(1)
		go p.work(w)
	}
	return p, nil
}

// Workers returns the number of worker goroutines.
func (p *Poller) Workers() int { return p.cfg.Workers }

// Close stops the listeners, the epoll loop and the workers. Registered
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
	err := p.ep.Close()
	close(p.queue)
	p.wg.Wait()
	return err
}

// Submit runs f on a worker. It never blocks: when the queue is full the
// task is handed over by a short-lived goroutine, so a worker that submits
// fan-out jobs can never deadlock against a full queue.
func (p *Poller) Submit(f func(*Worker)) {
	p.push(task{f: f})
}

func (p *Poller) push(t task) {
	if p.closed.Load() {
		return
	}
	defer func() {
		// The queue is closed only by Close; a push racing with it is dropped.
		_ = recover()
	}()
	select {
	case p.queue <- t:
	default:
		go func() {
			defer func() { _ = recover() }()
			p.queue <- t
		}()
	}
}

// Worker is one pool goroutine. Its buffer is reused for every read.
type Worker struct {
	buf []byte
}

func (p *Poller) work(w *Worker) {
	defer p.wg.Done()
	for t := range p.queue {
		if t.d != nil {
			t.d.run(w)
			continue
		}
		p.runFunc(w, t.f)
	}
}

func (p *Poller) runFunc(w *Worker, f func(*Worker)) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("poller: job panicked", "panic", r)
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
