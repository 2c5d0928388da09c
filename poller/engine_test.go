package poller

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
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
