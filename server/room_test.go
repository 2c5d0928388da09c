package server

import (
	"bytes"
	"testing"

	"chatd/server/broker"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// TestBatchVisible: a member gets the frames published after it joined,
// minus its own.
func TestBatchVisible(t *testing.T) {
	x, y, z, w := new(Conn), new(Conn), new(Conn), new(Conn)
	fa := wsframe.AppendFrame(nil, ws.OpText, []byte("a from x, seq 5"))
	fb := wsframe.AppendFrame(nil, ws.OpText, []byte("b from w, seq 6"))
	fc := wsframe.AppendFrame(nil, ws.OpText, []byte("c from x, seq 6"))
	b := &batch{
		buf:     bytes.Join([][]byte{fa, fb, fc}, nil),
		senders: []senderRange{{x, 0, len(fa)}, {w, len(fa), len(fa) + len(fb)}, {x, len(fa) + len(fb), len(fa) + len(fb) + len(fc)}},
		marks:   []seqMark{{0, 5}, {len(fa), 6}},
	}
	cases := []struct {
		name   string
		c      *Conn
		joined uint64
		want   []byte
	}{
		{"old member, not a sender", z, 1, bytes.Join([][]byte{fa, fb, fc}, nil)},
		{"old member, sent a and c", x, 1, fb},
		{"old member, sent b", w, 2, bytes.Join([][]byte{fa, fc}, nil)},
		{"joined at seq 6: misses a", y, 6, bytes.Join([][]byte{fb, fc}, nil)},
		{"joined at seq 7: gets nothing", y, 7, nil},
	}
	for _, tc := range cases {
		got := bytes.Join(b.visible(tc.c, tc.joined), nil)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRoomMembership: joins and leaves in any order keep a room's members
// and their positions consistent, both in a raw room (positions kept in
// Conn.roomPos) and in a Pusher channel's room (an index map), and a
// connection may be in several channel rooms at once.
func TestRoomMembership(t *testing.T) {
	h := newHub(&Server{broker: broker.Local{}})
	conns := make([]*Conn, 50)
	for i := range conns {
		conns[i] = &Conn{}
	}
	check := func(r *Room, want map[*Conn]bool) {
		t.Helper()
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.members) != len(want) || len(r.joined) != len(want) {
			t.Fatalf("room %s: %d members (%d join numbers), want %d", r.name, len(r.members), len(r.joined), len(want))
		}
		for i, c := range r.members {
			if !want[c] {
				t.Fatalf("room %s: unexpected member at %d", r.name, i)
			}
			if p, ok := r.position(c); !ok || int(p) != i {
				t.Fatalf("room %s: member at %d has position %d, %v", r.name, i, p, ok)
			}
		}
	}
	raw, _ := h.join("chat/a", conns[0], true)
	chA, _ := h.Join("ch-a", conns[0])
	chB, _ := h.Join("ch-b", conns[0])
	inRaw, inA, inB := map[*Conn]bool{conns[0]: true}, map[*Conn]bool{conns[0]: true}, map[*Conn]bool{conns[0]: true}
	for _, c := range conns[1:] {
		h.join("chat/a", c, true)
		h.Join("ch-a", c)
		h.Join("ch-a", c) // idempotent
		inRaw[c], inA[c] = true, true
	}
	for _, c := range conns[10:20] {
		h.Join("ch-b", c)
		inB[c] = true
	}
	check(raw, inRaw)
	check(chA, inA)
	check(chB, inB)
	// Leave from the front, the middle and the end.
	for _, i := range []int{0, 25, 49, 3, 17, 48, 10} {
		c := conns[i]
		h.Leave("chat/a", c)
		h.Leave("chat/a", c) // idempotent
		h.Leave("ch-a", c)
		delete(inRaw, c)
		delete(inA, c)
		check(raw, inRaw)
		check(chA, inA)
	}
	check(chB, inB)
	if _, ok := raw.position(conns[0]); ok {
		t.Fatal("a member that left still has a position in the raw room")
	}
}
