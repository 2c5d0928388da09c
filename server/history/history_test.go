package history

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestStore(t *testing.T, maxBytes int64, inUse func(string) bool) (*Store, *clock) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	s := New(Config{MaxBytes: maxBytes, Now: c.now, SweepInterval: -1, InUse: inUse})
	t.Cleanup(s.Close)
	return s, c
}

func appendN(s *Store, key string, lim Limits, n int) []Position {
	var out []Position
	for i := 0; i < n; i++ {
		msg := []byte(fmt.Sprintf("m%d", i))
		out = append(out, s.Append(key, lim, func(Position) []byte { return msg }, func([]byte) {}))
	}
	return out
}

func join(s *Store, key string, lim Limits, req Request) (msgs []string, at Position, err error) {
	s.Join(key, lim, req, func(f [][]byte, p Position, e error) {
		for _, b := range f {
			msgs = append(msgs, string(b))
		}
		at, err = p, e
	})
	return
}

func TestPositionsGrowWithinEpoch(t *testing.T) {
	s, _ := newTestStore(t, 0, nil)
	lim := Limits{Size: 10}
	pos := appendN(s, "a", lim, 3)
	for i, p := range pos {
		if p.Offset != uint64(i+1) || p.Epoch != pos[0].Epoch || p.Epoch == "" {
			t.Fatalf("position %d = %v", i, p)
		}
	}
	other := appendN(s, "b", lim, 1)
	if other[0].Epoch == pos[0].Epoch || other[0].Offset != 1 {
		t.Fatalf("stream b: %v (a: %v)", other[0], pos[0])
	}
	got, err := ParsePosition(pos[2].String())
	if err != nil || got != pos[2] {
		t.Fatalf("ParsePosition(%q) = %v, %v", pos[2].String(), got, err)
	}
	for _, bad := range []string{"", "x", ":1", "e:", "e:-1", "e:1.5", "a b:1", "e:99999999999999999999999"} {
		if _, err := ParsePosition(bad); !errors.Is(err, ErrBadPos) {
			t.Errorf("ParsePosition(%q) = %v, want ErrBadPos", bad, err)
		}
	}
}

func TestJoinLastAndSince(t *testing.T) {
	s, _ := newTestStore(t, 0, nil)
	lim := Limits{Size: 5}
	pos := appendN(s, "r", lim, 8) // keeps m3..m7 (offsets 4..8)
	cases := []struct {
		name string
		req  Request
		want []string
		err  error
	}{
		{"last 0", Request{}, nil, nil},
		{"last 2", Request{Last: 2}, []string{"m6", "m7"}, nil},
		{"last huge", Request{Last: 1 << 30}, []string{"m3", "m4", "m5", "m6", "m7"}, nil},
		{"last negative", Request{Last: -3}, nil, nil},
		{"since newest", Request{Since: &pos[7]}, nil, nil},
		{"since 5", Request{Since: &pos[4]}, []string{"m5", "m6", "m7"}, nil},
		{"since oldest-1", Request{Since: &pos[2]}, []string{"m3", "m4", "m5", "m6", "m7"}, nil},
		{"too old", Request{Since: &pos[1]}, nil, ErrTooOld},
		{"future", Request{Since: &Position{Epoch: pos[0].Epoch, Offset: 9}}, nil, ErrFuture},
		{"other epoch", Request{Since: &Position{Epoch: "zz-1", Offset: 5}}, nil, ErrEpoch},
	}
	for _, tc := range cases {
		got, at, err := join(s, "r", lim, tc.req)
		if !errors.Is(err, tc.err) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
		if at != pos[7] {
			t.Errorf("%s: at %v, want %v", tc.name, at, pos[7])
		}
	}
}

func TestTTLAndSweep(t *testing.T) {
	inUse := map[string]bool{"kept": true}
	s, c := newTestStore(t, 0, func(k string) bool { return inUse[k] })
	lim := Limits{Size: 100, TTL: time.Minute}
	appendN(s, "r", lim, 2)
	c.add(40 * time.Second)
	appendN(s, "r", lim, 1)
	c.add(30 * time.Second) // the first two are 70 s old
	if got, _, _ := join(s, "r", lim, Request{Last: 10}); fmt.Sprint(got) != "[m0]" {
		t.Fatalf("after 70 s: %v", got)
	}
	appendN(s, "kept", lim, 1)
	c.add(2 * time.Minute)
	s.Sweep()
	st := s.Stats()
	if st.Streams != 1 || st.Messages != 0 || st.Expired != 4 {
		t.Fatalf("after sweep: %+v", st)
	}
	// The stream whose room has members keeps its epoch and offsets.
	_, at, _ := join(s, "kept", lim, Request{})
	if at.Offset != 1 {
		t.Fatalf("kept stream at %v", at)
	}
	// The forgotten one starts a new epoch.
	p := appendN(s, "r", lim, 1)[0]
	if p.Offset != 1 {
		t.Fatalf("recreated stream: %v", p)
	}
}

func TestMaxBytesEvictsLeastRecentlyPublished(t *testing.T) {
	msg := make([]byte, 1000)
	per := int64(len(msg) + entryOverhead)
	s, _ := newTestStore(t, 3*(per*4+streamOverhead+1), nil)
	lim := Limits{Size: 4}
	put := func(key string) {
		s.Append(key, lim, func(Position) []byte { return msg }, func([]byte) {})
	}
	for _, k := range []string{"a", "b", "c"} {
		for i := 0; i < 4; i++ {
			put(k)
		}
	}
	put("a") // a is now the most recent; b the least
	put("d")
	st := s.Stats()
	if st.Evicted != 1 || st.Bytes > 3*(per*4+streamOverhead+1) {
		t.Fatalf("stats %+v", st)
	}
	if got, _, _ := join(s, "b", lim, Request{Last: 4}); len(got) != 0 {
		t.Fatalf("b still has %d messages", len(got))
	}
	if got, _, _ := join(s, "a", lim, Request{Last: 4}); len(got) != 4 {
		t.Fatalf("a has %d messages", len(got))
	}
}

func TestSizeBoundAndOff(t *testing.T) {
	s, _ := newTestStore(t, 0, nil)
	appendN(s, "r", Limits{Size: 3}, 1000)
	if st := s.Stats(); st.Messages != 3 {
		t.Fatalf("messages %d", st.Messages)
	}
	delivered := 0
	p := s.Append("off", Limits{}, func(p Position) []byte { return []byte("x") }, func([]byte) { delivered++ })
	if p != (Position{}) || delivered != 1 {
		t.Fatalf("off: %v, delivered %d", p, delivered)
	}
	if _, _, err := join(s, "off", Limits{}, Request{Since: &Position{Epoch: "e", Offset: 1}}); !errors.Is(err, ErrOff) {
		t.Fatalf("since on an off stream: %v", err)
	}
}

func TestAppendAllocs(t *testing.T) {
	s, _ := newTestStore(t, 0, nil)
	lim := Limits{Size: 100}
	msg := []byte("hello")
	enc := func(Position) []byte { return msg }
	del := func([]byte) {}
	appendN(s, "r", lim, 200)
	if n := testing.AllocsPerRun(1000, func() { s.Append("r", lim, enc, del) }); n != 0 {
		t.Fatalf("Append allocates %.1f per message once the ring is full", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	s := New(Config{SweepInterval: -1})
	defer s.Close()
	lim := Limits{Size: 100}
	msg := make([]byte, 64)
	enc := func(Position) []byte { return msg }
	del := func([]byte) {}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Append("room", lim, enc, del)
	}
}
