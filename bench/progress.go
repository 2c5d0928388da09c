package bench

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// progress draws one bar per long phase (connecting, sending, receiving)
// on stderr with mpb. It is a no-op when stderr is not a terminal, so logs
// and CI output stay clean.
type progress struct {
	p *mpb.Progress
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), ioctlGetTermios)
	return err == nil
}

func newProgress(w io.Writer, enabled bool) *progress {
	if !enabled || w == nil {
		return &progress{}
	}
	// Enabled means wanted (a terminal, or asked for): draw even when the
	// writer is not a terminal mpb recognizes.
	return &progress{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())}
}

// track shows a bar named name that polls current() until the returned
// stop is called.
func (p *progress) track(name string, total int64, current func() int64) (stop func()) {
	if p.p == nil || total <= 0 {
		return func() {}
	}
	bar := p.p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WC{W: 26, C: decor.DindentRight}), decor.CountersNoUnit("%d / %d", decor.WC{W: 20})),
		mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}), decor.Name(" "), decor.Elapsed(decor.ET_STYLE_GO)),
		mpb.BarRemoveOnComplete(),
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				bar.SetCurrent(min(current(), total))
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		bar.SetCurrent(min(current(), total))
		bar.Abort(true)
		bar.Wait()
	}
}

func (p *progress) wait() {
	if p.p != nil {
		p.p.Wait()
	}
}
