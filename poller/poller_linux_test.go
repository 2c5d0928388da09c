package poller

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFdTableGrows: a socket whose fd number lies past the table's first
// size (and then past a second growth) is found by the wait loop: its data
// arrives and its hangup too, and the fd numbers below it keep working.
func TestFdTableGrows(t *testing.T) {
	p := newTestPoller(t, quietConfig(2))
	for _, target := range []int{initialDescs + 7, 4*initialDescs + 3} {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Move one end to the high number (dup3 onto a free slot).
		if err := unix.Dup3(pair[0], target, unix.O_CLOEXEC); err != nil {
			t.Skipf("dup3 to fd %d: %v (open-file limit?)", target, err)
		}
		unix.Close(pair[0])
		got := make(chan string, 4)
		d := new(Desc)
		h := &funcHandler{
			data: func(_ *Worker, b []byte) { got <- string(b) },
			hangup: func(*Worker, error) {
				got <- "hangup"
				d.Close()
			},
		}
		if err := p.Register(d, target, h); err != nil {
			t.Fatalf("Register fd %d: %v", target, err)
		}
		if _, err := unix.Write(pair[1], []byte("hi")); err != nil {
			t.Fatal(err)
		}
		unix.Close(pair[1])
		for _, want := range []string{"hi", "hangup"} {
			select {
			case s := <-got:
				if s != want {
					t.Fatalf("fd %d: got %q, want %q", target, s, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("fd %d: no %q", target, want)
			}
		}
	}
}
