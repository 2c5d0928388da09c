package server

import (
	"bytes"
	"testing"

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
