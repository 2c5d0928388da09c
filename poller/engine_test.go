package poller

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// testEngine is the engine the package's tests run on: CHATD_POLLER, as
// cmd/chatd reads it (.ci/run runs the suite once per engine), or the
// default when it is unset.
var testEngine = os.Getenv("CHATD_POLLER")

func TestMain(m *testing.M) {
	if err := CheckEngine(testEngine); err != nil {
		fmt.Fprintf(os.Stderr, "CHATD_POLLER: %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestEngines: the default is epoll on Linux and netpoll elsewhere, every
// listed engine starts and says which it is, and a name that is unknown
// or not built for this OS fails New with ErrEngine and a message that
// names the alternatives.
func TestEngines(t *testing.T) {
	want := EngineNetpoll
	if runtime.GOOS == "linux" {
		want = EngineEpoll
	}
	if DefaultEngine() != want || Engines()[0] != want {
		t.Errorf("default engine %q (engines %v), want %q first", DefaultEngine(), Engines(), want)
	}
	if !slices.Contains(Engines(), EngineNetpoll) {
		t.Errorf("engines %v lack netpoll", Engines())
	}
	for _, name := range append(Engines(), "") {
		p, err := New(Config{Workers: 1, Engine: name})
		if err != nil {
			t.Fatalf("New(Engine %q): %v", name, err)
		}
		got := p.Engine()
		p.Close()
		if name == "" {
			name = DefaultEngine()
		}
		if got != name {
			t.Errorf("Engine %q: poller reports %q", name, got)
		}
	}
	bad := []string{"kqueue", "EPOLL", "io_uring"}
	if runtime.GOOS != "linux" {
		bad = append(bad, EngineEpoll)
	}
	for _, name := range bad {
		_, err := New(Config{Engine: name})
		if !errors.Is(err, ErrEngine) {
			t.Errorf("New(Engine %q) = %v, want ErrEngine", name, err)
		}
		if err != nil {
			t.Logf("%s: %v", name, err)
		}
	}
}

// registrationBytes registers n sockets on a fresh poller of engine and
// returns the heap that the registrations hold, per socket: whatever the
// engine keeps per fd (the epoll engine's table slot; netpoll's closure
// and map entry). The Descs themselves are the caller's memory and are
// allocated before the first reading.
func registrationBytes(t *testing.T, engine string, n int) float64 {
	t.Helper()
	p := newTestPoller(t, Config{Workers: 1, Engine: engine})
	fds := make([]int, 0, 2*n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i := 0; i < n; i++ {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatalf("socketpair %d: %v", i, err)
		}
		fds = append(fds, pair[0], pair[1])
		unix.SetNonblock(pair[0], true)
	}
	descs := make([]Desc, n)
	h := noopHandler{}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range descs {
		if err := p.Register(&descs[i], fds[2*i], h); err != nil {
			t.Fatal(err)
		}
	}
	after := heap()
	runtime.KeepAlive(descs)
	for i := range descs {
		_ = p.ep.delDesc(&descs[i])
	}
	return (float64(after) - float64(before)) / float64(n)
}

// TestRegistrationMemory measures what one registered connection costs
// each engine beyond its Desc (bench/RESULTS.md, issue 18). The epoll
// engine's table holds one pointer per fd number, doubled as it grows: at
// most 16 bytes per fd number, 32 per registration here, where every other
// number is the unregistered end of a socketpair. netpoll has no table but
// a closure (16 bytes) and an entry in a map[int]func per fd.
func TestRegistrationMemory(t *testing.T) {
	const n = 4000
	got := map[string]float64{}
	for _, e := range Engines() {
		got[e] = registrationBytes(t, e, n)
		t.Logf("%s: %.1f bytes per registered fd (%d fds)", e, got[e], n)
	}
	// 32 for the table; the rest is slack for what the runtime and the
	// poller's own goroutines allocate while the heap is measured.
	if b, ok := got[EngineEpoll]; ok && b > 40 {
		t.Errorf("epoll engine: %.1f bytes per registration, want at most 40 (a table pointer per fd number, doubling: 32)", b)
	}
}

// BenchmarkRegister is what accepting and closing a connection costs each
// engine in the loop's bookkeeping: one registration and its removal
// (epoll_ctl ADD and DEL on one socket, plus netpoll's closure, map entry
// and locks).
func BenchmarkRegister(b *testing.B) {
	for _, e := range Engines() {
		b.Run("engine="+e, func(b *testing.B) {
			p, err := New(Config{Workers: 1, Engine: e})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(pair[0])
			defer unix.Close(pair[1])
			unix.SetNonblock(pair[0], true)
			// A Desc each: a worker may still run the previous one for
			// the writable edge its registration raised.
			descs := make([]Desc, b.N)
			h := noopHandler{}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range descs {
				if err := p.Register(&descs[i], pair[0], h); err != nil {
					b.Fatal(err)
				}
				if err := p.ep.delDesc(&descs[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// noopHandler ignores every event.
type noopHandler struct{}

func (noopHandler) OnData(*Worker, []byte)  {}
func (noopHandler) OnWritable(*Worker)      {}
func (noopHandler) OnWake(*Worker)          {}
func (noopHandler) OnHangup(*Worker, error) {}
