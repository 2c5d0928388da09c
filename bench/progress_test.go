package bench

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestProgressDrawsAndStops(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true)
	var n atomic.Int64
	stop := p.track("connect member", 100, n.Load)
	for i := 0; i < 100; i++ {
		n.Add(1)
		if i%20 == 0 {
			time.Sleep(60 * time.Millisecond)
		}
	}
	stop()
	p.wait()
	if !strings.Contains(out.String(), "connect member") {
		t.Errorf("no bar drawn: %q", out.String())
	}
	// Disabled: nothing at all.
	var quiet bytes.Buffer
	q := newProgress(&quiet, false)
	q.track("x", 10, n.Load)()
	q.wait()
	if quiet.Len() != 0 || isTerminal(&quiet) {
		t.Errorf("disabled progress wrote %q", quiet.String())
	}
}
