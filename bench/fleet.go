package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// A fleet is the client side of a run: one Agent in this process, or one
// per worker process. Workers are chatbench itself, re-executed with
// CHATBENCH_WORKER=1: each reads Requests as JSON lines on stdin and
// writes workerMessages (progress ticks and Responses) on stdout, so a run
// can hold more connections than one process's open-file limit allows.

const workerEnv = "CHATBENCH_WORKER"

// workerMessage is one line a worker writes.
type workerMessage struct {
	Progress *Counters `json:"progress,omitempty"`
	Response *Response `json:"response,omitempty"`
}

// RunWorkerIfAsked turns this process into a worker when CHATBENCH_WORKER
// is set, and exits when the coordinator closes stdin (or into a publish
// hook receiver when CHATBENCH_HOOK_RECEIVER is). main (and TestMain
// in tests that use -procs) calls it first.
func RunWorkerIfAsked() {
	runHookReceiverIfAsked() // or a publish hook receiver ({hook}, hookrecv.go)
	if os.Getenv(workerEnv) != "1" {
		return
	}
	if err := runWorker(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chatbench worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runWorker(in io.Reader, out io.Writer) error {
	_, _ = RaiseOpenFileLimit()
	a := NewAgent()
	defer a.CloseAll()
	var wmu sync.Mutex
	enc := json.NewEncoder(out)
	write := func(m workerMessage) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(m)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				c := a.Counters()
				if write(workerMessage{Progress: &c}) != nil {
					return
				}
			}
		}
	}()
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var req Request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp := a.Handle(context.Background(), req)
		if err := write(workerMessage{Response: &resp}); err != nil {
			return err
		}
	}
}

// worker is one member of the fleet.
type worker interface {
	call(ctx context.Context, req Request) (Response, error)
	counters() Counters
	cpu() time.Duration // CPU used by the process holding the agent
	close() error
}

type localWorker struct{ a *Agent }

func (w localWorker) call(ctx context.Context, req Request) (Response, error) {
	return w.a.Handle(ctx, req), nil
}
func (w localWorker) counters() Counters { return w.a.Counters() }
func (w localWorker) cpu() time.Duration { return 0 } // counted as the coordinator's own
func (w localWorker) close() error       { w.a.CloseAll(); return nil }

type remoteWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	enc   *json.Encoder
	resp  chan Response
	done  chan struct{}
	ctr   atomic.Pointer[Counters]
	mu    sync.Mutex // one call at a time
}

func startRemoteWorker() (*remoteWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("chatbench: starting a worker process: %w", err)
	}
	w := &remoteWorker{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), resp: make(chan Response, 1), done: make(chan struct{})}
	w.ctr.Store(&Counters{})
	go func() {
		defer close(w.done)
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var m workerMessage
			if err := dec.Decode(&m); err != nil {
				return
			}
			if m.Progress != nil {
				w.ctr.Store(m.Progress)
			}
			if m.Response != nil {
				w.resp <- *m.Response
			}
		}
	}()
	return w, nil
}

func (w *remoteWorker) call(ctx context.Context, req Request) (Response, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(req); err != nil {
		return Response{}, fmt.Errorf("chatbench: worker %d: %w", w.cmd.Process.Pid, err)
	}
	select {
	case r := <-w.resp:
		return r, nil
	case <-w.done:
		return Response{}, fmt.Errorf("chatbench: worker %d exited during %q", w.cmd.Process.Pid, req.Op)
	case <-ctx.Done():
		return Response{}, ctx.Err()
	}
}

func (w *remoteWorker) counters() Counters { return *w.ctr.Load() }

func (w *remoteWorker) cpu() time.Duration {
	d, _ := ReadProcCPU(w.cmd.Process.Pid)
	return d
}

func (w *remoteWorker) close() error {
	w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
	}
	return w.cmd.Wait()
}

// fleet is the set of workers of a run.
type fleet struct {
	workers []worker
}

func newFleet(procs int) (*fleet, error) {
	if procs <= 1 {
		return &fleet{workers: []worker{localWorker{NewAgent()}}}, nil
	}
	f := &fleet{}
	for i := 0; i < procs; i++ {
		w, err := startRemoteWorker()
		if err != nil {
			f.close()
			return nil, err
		}
		f.workers = append(f.workers, w)
	}
	return f, nil
}

func (f *fleet) close() {
	for _, w := range f.workers {
		_ = w.close()
	}
}

// all sends build(i) to worker i, all at once, and waits for every answer.
// A nil request skips that worker.
func (f *fleet) all(ctx context.Context, build func(i int) *Request) ([]Response, error) {
	out := make([]Response, len(f.workers))
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, w := range f.workers {
		req := build(i)
		if req == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := w.call(ctx, *req)
			if err == nil && r.Error != "" {
				err = errors.New(r.Error)
			}
			out[i], errs[i] = r, err
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func (f *fleet) counters() Counters {
	var c Counters
	for _, w := range f.workers {
		x := w.counters()
		c.Connected += x.Connected
		c.Failed += x.Failed
		c.Sent += x.Sent
		c.Received += x.Received
	}
	return c
}

// kill ends the worker processes at once (the memory guard): their
// sockets close with them.
func (f *fleet) kill() {
	for _, w := range f.workers {
		if rw, ok := w.(*remoteWorker); ok {
			_ = rw.cmd.Process.Kill()
		}
	}
}

// releaseMemory has this process and every worker process give the
// memory they freed back to the kernel (before a clientRSS sample). A
// local worker's agent lives in this process: one release serves both.
func (f *fleet) releaseMemory(ctx context.Context) {
	debug.FreeOSMemory()
	_, _ = f.all(ctx, func(i int) *Request {
		if _, ok := f.workers[i].(*remoteWorker); !ok {
			return nil
		}
		return &Request{Op: "release"}
	})
}

// clientRSS is the resident memory of chatbench: this process and workers.
func (f *fleet) clientRSS() int64 {
	var sum int64
	if s, err := ReadProc(os.Getpid()); err == nil {
		sum += s.RSS
	}
	for _, w := range f.workers {
		if rw, ok := w.(*remoteWorker); ok {
			if s, err := ReadProc(rw.cmd.Process.Pid); err == nil {
				sum += s.RSS
			}
		}
	}
	return sum
}

// clientCPU is the CPU used by chatbench so far: this process and workers.
func (f *fleet) clientCPU() time.Duration {
	d := selfCPU()
	for _, w := range f.workers {
		d += w.cpu()
	}
	return d
}

// split divides n into parts as equal as can be.
func split(n, parts int) []int {
	out := make([]int, parts)
	for i := range out {
		out[i] = n / parts
		if i < n%parts {
			out[i]++
		}
	}
	return out
}
