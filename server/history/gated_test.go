package history

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func newGated(t *testing.T, inUse func(string) bool) (*Store, *clock) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	s := New(Config{Now: c.now, SweepInterval: -1, Gated: true, InUse: inUse})
	t.Cleanup(s.Close)
	return s, c
}

func put(s *Store, key string, seq uint64, msg string) {
	var f []byte
	if msg != "" {
		f = []byte(msg)
	}
	s.Put(key, Limits{Size: 3}, Position{Epoch: "E", Offset: seq}, 0, f, func([]byte) {})
}

// A gated stream answers joins once Ready; positions are sparse and a
// position is honoured only while its message is kept.
func TestGatedJoinWaitsForReady(t *testing.T) {
	s, _ := newGated(t, nil)
	lim := Limits{Size: 3}
	var got []string
	s.Join("r", lim, Request{Last: 2}, func(f [][]byte, at Position, err error) {
		for _, b := range f {
			got = append(got, string(b))
		}
		got = append(got, fmt.Sprint(at.Offset, err))
	})
	if got != nil {
		t.Fatalf("answered before Ready: %v", got)
	}
	put(s, "r", 4, "")  // a marker
	put(s, "r", 7, "a") // sparse
	put(s, "r", 9, "b")
	s.Ready("r", Position{Epoch: "E", Offset: 9})
	if fmt.Sprint(got) != "[a b 9 <nil>]" {
		t.Fatalf("after Ready: %v", got)
	}
	put(s, "r", 12, "c") // ring of 3: the marker 4 is gone
	cases := []struct {
		since uint64
		want  string
	}{
		{9, "[c]"}, {7, "[b c]"}, {12, "[]"},
		{4, "ErrTooOld"}, // no longer kept: what came between is unknown
		{8, "[b c]"},     // not a kept position but after the oldest kept
	}
	for _, tc := range cases {
		msgs, _, err := join(s, "r", lim, Request{Since: &Position{Epoch: "E", Offset: tc.since}})
		out := fmt.Sprint(msgs)
		if msgs == nil {
			out = "[]"
		}
		if errors.Is(err, ErrTooOld) {
			out = "ErrTooOld"
		}
		if out != tc.want {
			t.Errorf("since %d: %s, want %s", tc.since, out, tc.want)
		}
	}
}

// A position ahead of this node's feed waits for it (the node may lag the
// cluster), and is answered when the feed reaches it, or ErrFuture after
// the wait.
func TestGatedLaggingPosition(t *testing.T) {
	s, c := newGated(t, nil)
	lim := Limits{Size: 10}
	put(s, "r", 1, "a")
	s.Ready("r", Position{Epoch: "E", Offset: 1})
	var got []string
	var gotErr error
	answered := false
	s.Join("r", lim, Request{Since: &Position{Epoch: "E", Offset: 3}}, func(f [][]byte, at Position, err error) {
		answered = true
		for _, b := range f {
			got = append(got, string(b))
		}
		gotErr = err
	})
	if answered {
		t.Fatal("answered a position the feed has not reached")
	}
	put(s, "r", 2, "b")
	if answered {
		t.Fatal("answered before the feed reached the position")
	}
	put(s, "r", 3, "c") // reached: nothing came after it yet; live from here
	if !answered || gotErr != nil || len(got) != 0 {
		t.Fatalf("answered %v: %v %v", answered, got, gotErr)
	}
	answered = false
	s.Join("r", lim, Request{Since: &Position{Epoch: "E", Offset: 99}}, func(_ [][]byte, _ Position, err error) {
		answered, gotErr = true, err
	})
	c.add(lagWait + time.Second)
	s.Sweep()
	if !answered || !errors.Is(gotErr, ErrFuture) {
		t.Fatalf("after the wait: %v %v", answered, gotErr)
	}
}

// A join that waited for the feed gets what was stamped from joinMargin
// before it began waiting; WaitingSince says when that was.
func TestGatedWaitingJoinGetsRecentMessages(t *testing.T) {
	s, c := newGated(t, nil)
	lim := Limits{Size: 10}
	start := c.now().UnixNano()
	s.Join("r", lim, Request{}, func(f [][]byte, _ Position, _ error) {
		if fmt.Sprint(f) != "[[110] [111]]" { // "n", "o"
			t.Errorf("replay %q", f)
		}
	})
	if w := s.WaitingSince("r"); w != start {
		t.Fatalf("WaitingSince %d, want %d", w, start)
	}
	old := start - int64(5*time.Second)
	s.Put("r", lim, Position{Epoch: "E", Offset: 1}, old, []byte("m"), func([]byte) {})
	s.Put("r", lim, Position{Epoch: "E", Offset: 2}, start-int64(time.Second/2), []byte("n"), func([]byte) {})
	s.Put("r", lim, Position{Epoch: "E", Offset: 3}, start+1, []byte("o"), func([]byte) {})
	s.Ready("r", Position{Epoch: "E", Offset: 3})
	if w := s.WaitingSince("r"); w != 0 {
		t.Fatalf("WaitingSince after Ready: %d", w)
	}
	// ReleasePending answers waiting joins without history.
	s.Do(func() { s.UnreadyLocked("r") })
	var relErr error
	s.Join("r", lim, Request{Since: &Position{Epoch: "E", Offset: 1}}, func(_ [][]byte, _ Position, err error) { relErr = err })
	s.ReleasePending(ErrUnavailable)
	if !errors.Is(relErr, ErrUnavailable) {
		t.Fatalf("released with %v", relErr)
	}
}
