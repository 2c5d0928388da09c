package broker

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/bench/testutil/natstest"
)

type received struct {
	mu   sync.Mutex
	msgs []string // room + " " + op + " " + payload
}

func (r *received) deliver(room string, op byte, payload []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, room+" "+strconv.Itoa(int(op))+" "+string(payload))
	r.mu.Unlock()
}

func (r *received) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func newNode(t testing.TB, url, id string, r *received) *NATS {
	t.Helper()
	b, err := NewNATS(NATSConfig{URLs: []string{url}, NodeID: id, Deliver: r.deliver})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestNATSCarriesRoomsBetweenNodes: a message published on one node reaches
// the other nodes interested in its room, once, in order, never the
// publisher itself, whatever characters the room key holds.
func TestNATSCarriesRoomsBetweenNodes(t *testing.T) {
	ns := natstest.Start(t, 0)
	var ra, rb, rc received
	a := newNode(t, ns.ClientURL(), "a", &ra)
	b := newNode(t, ns.ClientURL(), "b", &rb)
	c := newNode(t, ns.ClientURL(), "c", &rc)
	room := "app\x00presence-a.b*c>d e,f;g=h@i"
	a.Interest(room, true)
	b.Interest(room, true)
	c.Interest("elsewhere", true)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := ns.Subs(); n != 3 {
			return fmt.Errorf("%d subscriptions on the NATS server, want 3", n)
		}
		return nil
	})
	const n = 1000
	for i := 0; i < n; i++ {
		a.Publish(room, 1, []byte(strconv.Itoa(i)))
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := len(rb.snapshot()); got != n {
			return fmt.Errorf("b got %d of %d", got, n)
		}
		return nil
	})
	for i, m := range rb.snapshot() {
		if want := room + " 1 " + strconv.Itoa(i); m != want {
			t.Fatalf("b's message %d: %q, want %q", i, m, want)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := ra.snapshot(); len(got) != 0 {
		t.Fatalf("the publisher got %d of its own messages back", len(got))
	}
	if got := rc.snapshot(); len(got) != 0 {
		t.Fatalf("a node not interested in the room got %d messages", len(got))
	}
	if st := a.Stats(); st.Published != n || st.Lost != 0 || !st.Connected {
		t.Fatalf("publisher stats %+v", st)
	}
	if st := b.Stats(); st.Delivered != n || st.Rooms != 1 {
		t.Fatalf("receiver stats %+v", st)
	}
}

// TestNATSInterestFollowsMembers: a node subscribes with a room's first
// member and unsubscribes with its last, whatever order the counts come in.
func TestNATSInterestFollowsMembers(t *testing.T) {
	ns := natstest.Start(t, 0)
	var r received
	b := newNode(t, ns.ClientURL(), "b", &r)
	subs := func(want uint32) {
		t.Helper()
		testutil.CheckFor(t, 5*time.Second, func() error {
			if n := ns.Subs(); n != want {
				return fmt.Errorf("%d subscriptions, want %d", n, want)
			}
			return nil
		})
	}
	b.Interest("r", true)
	b.Interest("r", true)
	subs(1)
	b.Interest("r", false)
	subs(1)
	b.Interest("r", false)
	subs(0)
	// A leave that overtakes its join: never subscribed in between, and
	// nothing left behind.
	b.Interest("q", false)
	b.Interest("q", true)
	subs(0)
	if st := b.Stats(); st.Rooms != 0 {
		t.Fatalf("rooms %d, want 0", st.Rooms)
	}
}

// TestNATSRestart: nodes keep going while NATS is down, reconnect by
// themselves when it is back, re-establish their interest, and delivery
// resumes. A node started while NATS is down does not hang.
func TestNATSRestart(t *testing.T) {
	ns := natstest.Start(t, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	var ra, rb received
	a := newNode(t, url, "a", &ra)
	b := newNode(t, url, "b", &rb)
	b.Interest("r", true)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if ns.Subs() != 1 {
			return fmt.Errorf("not subscribed yet")
		}
		return nil
	})
	a.Publish("r", 2, []byte("before"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if len(rb.snapshot()) != 1 {
			return fmt.Errorf("b got %d", len(rb.snapshot()))
		}
		return nil
	})
	ns.Shutdown()
	ns.WaitForShutdown()
	// Started with NATS down: returns at once, not connected.
	start := time.Now()
	var rl received
	late := newNode(t, url, "late", &rl)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("NewNATS with NATS down took %v", el)
	}
	if late.Stats().Connected {
		t.Fatal("late node says it is connected while NATS is down")
	}
	late.Interest("r", true)
	ns2 := natstest.Start(t, port)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if !a.Stats().Connected || !b.Stats().Connected || !late.Stats().Connected {
			return fmt.Errorf("not all nodes reconnected")
		}
		if n := ns2.Subs(); n != 2 {
			return fmt.Errorf("%d subscriptions after the restart, want 2 (b and late)", n)
		}
		return nil
	})
	a.Publish("r", 2, []byte("after"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := rb.snapshot()
		if len(got) == 0 || got[len(got)-1] != "r 2 after" {
			return fmt.Errorf("b got %q", got)
		}
		if gl := rl.snapshot(); len(gl) != 1 || gl[0] != "r 2 after" {
			return fmt.Errorf("late node got %q", gl)
		}
		return nil
	})
	if a.Stats().Reconnect < 1 || b.Stats().Reconnect < 1 {
		t.Fatalf("reconnects not counted: a %+v b %+v", a.Stats(), b.Stats())
	}
}

// TestNATSCountsSkippedMessages: a receiver counts as lost the messages
// of a sender whose numbers in a room jump (what core NATS did not carry),
// and nothing for the first message it sees of a sender or of a new
// sender key.
func TestNATSCountsSkippedMessages(t *testing.T) {
	ns := natstest.Start(t, 0)
	var ra, rb received
	a := newNode(t, ns.ClientURL(), "a", &ra)
	b := newNode(t, ns.ClientURL(), "b", &rb)
	b.Interest("r", true)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := ns.Subs(); n != 1 {
			return fmt.Errorf("%d subscriptions, want 1", n)
		}
		return nil
	})
	// Numbers 1..5 were published before b subscribed: not lost to b.
	a.smu.Lock()
	a.seqs["r"] = 5
	a.smu.Unlock()
	a.Publish("r", 1, []byte("6"))
	// 7..9 go nowhere (as if NATS had dropped them).
	a.smu.Lock()
	a.seqs["r"] += 3
	a.smu.Unlock()
	a.Publish("r", 1, []byte("10"))
	// A sender that forgot its numbers starts over under a new key.
	a.smu.Lock()
	clear(a.seqs)
	a.sender[0]++
	a.smu.Unlock()
	a.Publish("r", 1, []byte("1 again"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := len(rb.snapshot()); got != 3 {
			return fmt.Errorf("b got %d of 3", got)
		}
		return nil
	})
	if st := b.Stats(); st.Lost != 3 {
		t.Fatalf("b counts %d lost, want 3 (7, 8, 9)", st.Lost)
	}
	if st := a.Stats(); st.Lost != 0 || st.Published != 3 {
		t.Fatalf("sender stats %+v", st)
	}
}
