package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"chatd/bench/testutil"

	"github.com/gobwas/ws"
)

// The tests build their frames with testutil.RawFrame (any header) and
// frame below, masked with testutil.Mask.

// frame is testutil.Frame in the argument order of the tables here: a
// well-formed masked client frame, no RSV bits.
func frame(op ws.OpCode, fin bool, payload []byte) []byte {
	return testutil.Frame(fin, 0, byte(op), true, payload)
}

// maskServerFrames turns unmasked server frames (as AppendFrame and
// AppendClose write them) into masked client frames the Decoder accepts.
// p may hold several frames back to back.
func maskServerFrames(t testing.TB, p []byte) []byte {
	t.Helper()
	var out []byte
	for len(p) > 0 {
		if len(p) < 2 || p[1]&0x80 != 0 {
			t.Fatalf("not an unmasked server frame: % x", p[:min(len(p), 14)])
		}
		n := 2
		length := uint64(p[1] & 0x7f)
		switch length {
		case 126:
			length = uint64(binary.BigEndian.Uint16(p[2:4]))
			n = 4
		case 127:
			length = binary.BigEndian.Uint64(p[2:10])
			n = 10
		}
		if uint64(len(p)-n) < length {
			t.Fatalf("server frame truncated: header says %d bytes, %d left", length, len(p)-n)
		}
		out = append(out, testutil.RawFrame(p[0], true, length, p[n:n+int(length)])...)
		p = p[n+int(length):]
	}
	return out
}

// event is one Handler callback, with its bytes copied.
type event struct {
	kind string // "msg", "ping", "pong", "close"
	op   ws.OpCode
	code ws.StatusCode
	data string
}

func (e event) String() string {
	d := e.data
	if len(d) > 40 {
		d = fmt.Sprintf("%q...(%d bytes)", d[:40], len(d))
	} else {
		d = fmt.Sprintf("%q", d)
	}
	switch e.kind {
	case "msg":
		return fmt.Sprintf("msg(op=%d %s)", e.op, d)
	case "close":
		return fmt.Sprintf("close(%d %s)", e.code, d)
	}
	return fmt.Sprintf("%s(%s)", e.kind, d)
}

// recorder is a Handler that records every callback.
type recorder struct{ events []event }

func (r *recorder) OnMessage(op ws.OpCode, p []byte) {
	r.events = append(r.events, event{kind: "msg", op: op, data: string(p)})
}
func (r *recorder) OnPing(p []byte) {
	r.events = append(r.events, event{kind: "ping", data: string(p)})
}
func (r *recorder) OnPong(p []byte) {
	r.events = append(r.events, event{kind: "pong", data: string(p)})
}
func (r *recorder) OnClose(code ws.StatusCode, reason []byte) {
	r.events = append(r.events, event{kind: "close", code: code, data: string(reason)})
}

// outcome is everything a Decoder did with a stream.
type outcome struct {
	events []event
	code   ws.StatusCode // close code of the error; 0: no error
	err    error
}

func (o outcome) String() string {
	return fmt.Sprintf("events=%v err=%v", o.events, o.err)
}

func sameOutcome(a, b outcome) bool {
	if a.code != b.code || (a.err == nil) != (b.err == nil) || len(a.events) != len(b.events) {
		return false
	}
	for i := range a.events {
		if a.events[i] != b.events[i] {
			return false
		}
	}
	return true
}

// closeCode extracts the close code of a Feed error; errors that are not a
// *ProtocolError get 1 so they never compare equal to "no error".
func closeCode(err error) ws.StatusCode {
	if err == nil {
		return 0
	}
	var ce *ProtocolError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 1
}

// decodeChunks feeds a fresh copy of stream to a new Decoder, cut at the
// given offsets (ascending), and stops at the first error as a server does.
func decodeChunks(maxMsg int, stream []byte, cuts ...int) outcome {
	buf := append([]byte(nil), stream...) // Feed unmasks in place
	d := Decoder{MaxMessage: int32(maxMsg)}
	var r recorder
	var err error
	prev := 0
	for _, c := range append(cuts, len(buf)) {
		if err = d.Feed(buf[prev:c], &r); err != nil {
			break
		}
		prev = c
	}
	d.Release()
	return outcome{events: r.events, code: closeCode(err), err: err}
}

// decodeBytewise feeds stream one byte at a time.
func decodeBytewise(maxMsg int, stream []byte) outcome {
	cuts := make([]int, 0, len(stream))
	for i := 1; i < len(stream); i++ {
		cuts = append(cuts, i)
	}
	return decodeChunks(maxMsg, stream, cuts...)
}

func text(s string) event   { return event{kind: "msg", op: ws.OpText, data: s} }
func binMsg(s string) event { return event{kind: "msg", op: ws.OpBinary, data: s} }

type decodeCase struct {
	name   string
	maxMsg int
	stream []byte
	want   []event
	code   ws.StatusCode // expected error code; 0: Feed must succeed
}

// decodeCases are the streams every table-driven test runs through.
func decodeCases() []decodeCase {
	big := func(n int) string { return strings.Repeat("abcdefghij", n/10+1)[:n] }
	rsv := func(bit byte) []byte { return testutil.RawFrame(0x80|bit|byte(ws.OpText), true, 2, []byte("hi")) }
	cases := []decodeCase{
		// Valid data frames.
		{name: "text", stream: frame(ws.OpText, true, []byte("hello")), want: []event{text("hello")}},
		{name: "text multibyte", stream: frame(ws.OpText, true, []byte("héllo wörld ✓ 𝄞")), want: []event{text("héllo wörld ✓ 𝄞")}},
		{name: "binary", stream: frame(ws.OpBinary, true, []byte{0, 1, 0xfe, 0xff, 0xc0}), want: []event{binMsg("\x00\x01\xfe\xff\xc0")}},
		{name: "empty text", stream: frame(ws.OpText, true, nil), want: []event{text("")}},
		{name: "empty binary", stream: frame(ws.OpBinary, true, nil), want: []event{binMsg("")}},
		{name: "len 125 (7-bit max)", stream: frame(ws.OpText, true, []byte(big(125))), want: []event{text(big(125))}},
		{name: "len 126 (16-bit)", stream: frame(ws.OpBinary, true, []byte(big(126))), want: []event{binMsg(big(126))}},
		{name: "len 65535 (16-bit max)", stream: frame(ws.OpText, true, []byte(big(65535))), want: []event{text(big(65535))}},
		{name: "len 65536 (64-bit)", stream: frame(ws.OpBinary, true, []byte(big(65536))), want: []event{binMsg(big(65536))}},
		{name: "len 70000 (64-bit) text", stream: frame(ws.OpText, true, []byte(big(70000))), want: []event{text(big(70000))}},
		{name: "small length in 16-bit form", stream: testutil.RawFrame(0x80|byte(ws.OpText), true, 5, []byte("short")), want: []event{text("short")}},
		{
			name: "several messages back to back",
			stream: testutil.Concat(frame(ws.OpText, true, []byte("one")), frame(ws.OpBinary, true, []byte("two")),
				frame(ws.OpText, true, nil), frame(ws.OpText, true, []byte("four"))),
			want: []event{text("one"), binMsg("two"), text(""), text("four")},
		},

		// Fragmented messages.
		{
			name: "fragmented text, rune split across fragments",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("Hel")), frame(ws.OpContinuation, false, []byte("lo w\xc3")),
				frame(ws.OpContinuation, true, []byte("\xb6rld"))),
			want: []event{text("Hello wörld")},
		},
		{
			name: "fragmented 4-byte rune one byte per fragment",
			stream: testutil.Concat(frame(ws.OpText, false, []byte{0xf0}), frame(ws.OpContinuation, false, []byte{0x9d}),
				frame(ws.OpContinuation, false, []byte{0x84}), frame(ws.OpContinuation, true, []byte{0x9e})),
			want: []event{text("𝄞")},
		},
		{
			name: "fragmented binary with empty fragments",
			stream: testutil.Concat(frame(ws.OpBinary, false, nil), frame(ws.OpContinuation, false, []byte{1, 2}),
				frame(ws.OpContinuation, false, nil), frame(ws.OpContinuation, true, []byte{3})),
			want: []event{binMsg("\x01\x02\x03")},
		},
		{
			name:   "fragmented, all empty",
			stream: testutil.Concat(frame(ws.OpText, false, nil), frame(ws.OpContinuation, true, nil)),
			want:   []event{text("")},
		},
		{
			name: "fragmented large (16-bit and 64-bit fragments)",
			stream: testutil.Concat(frame(ws.OpBinary, false, []byte(big(300))), frame(ws.OpContinuation, false, []byte(big(70000))),
				frame(ws.OpContinuation, true, []byte("end"))),
			want: []event{binMsg(big(300) + big(70000) + "end")},
		},
		{
			name: "ping and pong between fragments",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("ab")), frame(ws.OpPing, true, []byte("p1")),
				frame(ws.OpContinuation, false, []byte("cd")), frame(ws.OpPong, true, nil),
				frame(ws.OpPing, true, []byte(big(125))), frame(ws.OpContinuation, true, []byte("ef"))),
			want: []event{{kind: "ping", data: "p1"}, {kind: "pong"}, {kind: "ping", data: big(125)}, text("abcdef")},
		},
		{
			name: "message after a fragmented message",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("a")), frame(ws.OpContinuation, true, []byte("b")),
				frame(ws.OpBinary, true, []byte("c")), frame(ws.OpText, false, []byte("d")), frame(ws.OpContinuation, true, []byte("e"))),
			want: []event{text("ab"), binMsg("c"), text("de")},
		},
		{
			name: "close between fragments ends everything",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("half")), frame(ws.OpClose, true, testutil.CloseBody(1000, "bye")),
				frame(ws.OpContinuation, true, []byte("never"))),
			want: []event{{kind: "close", code: 1000, data: "bye"}},
		},

		// Control frames.
		{name: "ping", stream: frame(ws.OpPing, true, []byte("are you there")), want: []event{{kind: "ping", data: "are you there"}}},
		{name: "empty ping", stream: frame(ws.OpPing, true, nil), want: []event{{kind: "ping"}}},
		{name: "pong", stream: frame(ws.OpPong, true, []byte("yes")), want: []event{{kind: "pong", data: "yes"}}},
		{name: "ping 125 bytes", stream: frame(ws.OpPing, true, []byte(big(125))), want: []event{{kind: "ping", data: big(125)}}},
		{name: "close without body", stream: frame(ws.OpClose, true, nil), want: []event{{kind: "close"}}},
		{name: "close 1000", stream: frame(ws.OpClose, true, testutil.CloseBody(1000, "")), want: []event{{kind: "close", code: 1000}}},
		{name: "close with reason", stream: frame(ws.OpClose, true, testutil.CloseBody(1001, "going äway")), want: []event{{kind: "close", code: 1001, data: "going äway"}}},
		{name: "close 4999 and longest reason", stream: frame(ws.OpClose, true, testutil.CloseBody(4999, big(123))), want: []event{{kind: "close", code: 4999, data: big(123)}}},
		{
			name: "bytes after close are ignored",
			stream: testutil.Concat(frame(ws.OpText, true, []byte("x")), frame(ws.OpClose, true, testutil.CloseBody(1000, "")),
				frame(ws.OpText, true, []byte("late")), []byte{0xff, 0xff, 0x00}),
			want: []event{text("x"), {kind: "close", code: 1000}},
		},

		// MaxMessage boundaries.
		{name: "exactly MaxMessage", maxMsg: 10, stream: frame(ws.OpText, true, []byte(big(10))), want: []event{text(big(10))}},
		{
			name: "fragmented exactly MaxMessage", maxMsg: 10,
			stream: testutil.Concat(frame(ws.OpText, false, []byte(big(6))), frame(ws.OpPing, true, []byte(big(100))), frame(ws.OpContinuation, true, []byte(big(4)))),
			want:   []event{{kind: "ping", data: big(100)}, text(big(6) + big(4))},
		},

		// Protocol errors (1002).
		{name: "unmasked", stream: testutil.RawFrame(0x80|byte(ws.OpText), false, 2, []byte("hi")), code: ws.StatusProtocolError},
		{name: "unmasked ping", stream: testutil.RawFrame(0x80|byte(ws.OpPing), false, 0, nil), code: ws.StatusProtocolError},
		{name: "RSV1", stream: rsv(0x40), code: ws.StatusProtocolError},
		{name: "RSV2", stream: rsv(0x20), code: ws.StatusProtocolError},
		{name: "RSV3", stream: rsv(0x10), code: ws.StatusProtocolError},
		{name: "RSV on continuation", stream: testutil.Concat(frame(ws.OpText, false, []byte("a")), testutil.RawFrame(0x80|0x40, true, 1, []byte("b"))), code: ws.StatusProtocolError},
		{name: "fragmented ping", stream: frame(ws.OpPing, false, []byte("x")), code: ws.StatusProtocolError},
		{name: "fragmented close", stream: frame(ws.OpClose, false, testutil.CloseBody(1000, "")), code: ws.StatusProtocolError},
		{name: "ping over 125 bytes", stream: frame(ws.OpPing, true, []byte(big(126))), code: ws.StatusProtocolError},
		{name: "close over 125 bytes", stream: frame(ws.OpClose, true, testutil.CloseBody(1000, big(124))), code: ws.StatusProtocolError},
		// The decision needs only the header: no payload follows.
		{name: "pong announcing 64-bit length", stream: testutil.RawFrame(0x80|byte(ws.OpPong), true, 1<<20, nil), code: ws.StatusProtocolError},
		{name: "continuation without a message", stream: frame(ws.OpContinuation, true, []byte("x")), code: ws.StatusProtocolError},
		{
			name:   "continuation after a finished message",
			stream: testutil.Concat(frame(ws.OpText, true, []byte("done")), frame(ws.OpContinuation, true, []byte("x"))),
			want:   []event{text("done")}, code: ws.StatusProtocolError,
		},
		{name: "text inside fragmented message", stream: testutil.Concat(frame(ws.OpText, false, []byte("a")), frame(ws.OpText, true, []byte("b"))), code: ws.StatusProtocolError},
		{name: "binary inside fragmented message", stream: testutil.Concat(frame(ws.OpBinary, false, []byte("a")), frame(ws.OpBinary, false, []byte("b"))), code: ws.StatusProtocolError},
		{
			name:   "data inside fragmented message after a ping",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("a")), frame(ws.OpPing, true, nil), frame(ws.OpBinary, true, []byte("b"))),
			want:   []event{{kind: "ping"}}, code: ws.StatusProtocolError,
		},
		{name: "64-bit length with MSB set", stream: testutil.RawFrame(0x80|byte(ws.OpBinary), true, 1<<63, nil), code: ws.StatusProtocolError},
		{name: "64-bit length all ones", stream: testutil.RawFrame(0x80|byte(ws.OpBinary), true, ^uint64(0), nil), code: ws.StatusProtocolError},
		{name: "close body of one byte", stream: frame(ws.OpClose, true, []byte{0x03}), code: ws.StatusProtocolError},
		{
			name:   "error after valid frames keeps earlier callbacks",
			stream: testutil.Concat(frame(ws.OpText, true, []byte("ok")), frame(ws.OpPing, true, []byte("p")), testutil.RawFrame(0x80|byte(ws.OpText), false, 1, []byte("x"))),
			want:   []event{text("ok"), {kind: "ping", data: "p"}}, code: ws.StatusProtocolError,
		},

		// Invalid UTF-8 (1007).
		{name: "invalid UTF-8 text", stream: frame(ws.OpText, true, []byte("ab\xffcd")), code: ws.StatusInvalidFramePayloadData},
		{name: "surrogate in text", stream: frame(ws.OpText, true, []byte("\xed\xa0\x80")), code: ws.StatusInvalidFramePayloadData},
		{name: "overlong in text", stream: frame(ws.OpText, true, []byte("\xc0\x80")), code: ws.StatusInvalidFramePayloadData},
		{name: "truncated rune at end of text", stream: frame(ws.OpText, true, []byte("ab\xe2\x82")), code: ws.StatusInvalidFramePayloadData},
		{name: "invalid UTF-8 in long text", stream: frame(ws.OpText, true, []byte(big(1000)+"\x80"+big(1000))), code: ws.StatusInvalidFramePayloadData},
		{
			name:   "invalid UTF-8 in second fragment",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("ok")), frame(ws.OpContinuation, false, []byte("\xf5")), frame(ws.OpContinuation, true, []byte("x"))),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			// RFC 6455 8.1: fail as soon as invalid UTF-8 is seen, not at the
			// end of the message: the final fragment is never sent here.
			name:   "invalid UTF-8 fails before the message ends",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("ok")), frame(ws.OpContinuation, false, []byte("\xc3\x28"))),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "fragmented text ends inside a rune",
			stream: testutil.Concat(frame(ws.OpText, false, []byte("a\xf0\x9d")), frame(ws.OpContinuation, true, []byte("\x84"))),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{name: "binary is not checked for UTF-8", stream: frame(ws.OpBinary, true, []byte("\xff\xfe")), want: []event{binMsg("\xff\xfe")}},

		// MaxMessage (1009), decided at header time.
		{name: "over MaxMessage", maxMsg: 10, stream: frame(ws.OpText, true, []byte(big(11))), code: ws.StatusMessageTooBig},
		{name: "over MaxMessage, header only", maxMsg: 1000, stream: testutil.RawFrame(0x80|byte(ws.OpBinary), true, 1<<40, nil), code: ws.StatusMessageTooBig},
		{name: "over MaxMessage, 16-bit header only", maxMsg: 1000, stream: testutil.RawFrame(0x80|byte(ws.OpBinary), true, 1001, nil), code: ws.StatusMessageTooBig},
		{
			name: "fragments add up over MaxMessage", maxMsg: 10,
			stream: testutil.Concat(frame(ws.OpText, false, []byte(big(6))), testutil.RawFrame(byte(ws.OpContinuation), true, 5, nil)),
			code:   ws.StatusMessageTooBig,
		},
		{
			// A continuation announcing 2^63-1 bytes: msgLen+length must not
			// overflow into an accepted size.
			name: "continuation length near 2^63 after a fragment", maxMsg: 1 << 16,
			stream: testutil.Concat(frame(ws.OpBinary, false, []byte(big(10))), testutil.RawFrame(byte(ws.OpContinuation), true, 1<<63-1, nil)),
			code:   ws.StatusMessageTooBig,
		},
		{name: "control frames do not count toward MaxMessage", maxMsg: 4, stream: frame(ws.OpPing, true, []byte(big(100))), want: []event{{kind: "ping", data: big(100)}}},

		// Close frame bodies.
		{name: "close reason not UTF-8", stream: frame(ws.OpClose, true, testutil.CloseBody(1000, "\xff")), code: ws.StatusInvalidFramePayloadData},
		{name: "close reason truncated rune", stream: frame(ws.OpClose, true, testutil.CloseBody(1000, "caf\xc3")), code: ws.StatusInvalidFramePayloadData},
	}
	for _, code := range []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, decodeCase{
			name:   fmt.Sprintf("invalid close code %d", code),
			stream: frame(ws.OpClose, true, testutil.CloseBody(code, "")),
			code:   ws.StatusProtocolError,
		})
	}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, decodeCase{
			name:   fmt.Sprintf("valid close code %d", code),
			stream: frame(ws.OpClose, true, testutil.CloseBody(code, "r")),
			want:   []event{{kind: "close", code: ws.StatusCode(code), data: "r"}},
		})
	}
	for _, op := range []byte{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, decodeCase{
			name:   fmt.Sprintf("reserved opcode %#x", op),
			stream: testutil.RawFrame(0x80|op, true, 1, []byte("x")),
			code:   ws.StatusProtocolError,
		})
	}
	return cases
}

func TestDecoderFeed(t *testing.T) {
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeChunks(tc.maxMsg, tc.stream)
			want := outcome{events: tc.want, code: tc.code}
			if got.code != want.code || !sameOutcome(outcome{events: got.events}, outcome{events: want.events}) {
				t.Fatalf("got  %v (code %d)\nwant events=%v code %d", got, got.code, want.events, want.code)
			}
			if tc.code != 0 {
				var ce *ProtocolError
				if !errors.As(got.err, &ce) {
					t.Fatalf("error %v (%T) is not a *ProtocolError", got.err, got.err)
				}
			}
		})
	}
}

// TestDecoderSplitEverywhere feeds every table stream cut at every byte
// boundary, in three pieces, and one byte at a time: the callbacks and the
// error must be exactly those of feeding it whole.
func TestDecoderSplitEverywhere(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			whole := decodeChunks(tc.maxMsg, tc.stream)
			n := len(tc.stream)
			// Every cut for streams up to 4 KiB; for the big ones every cut
			// in the first and last 300 bytes (headers, fragment borders at
			// the ends) and a stride through the middle, which keeps the test
			// quick under -race.
			for i := 0; i <= n; i++ {
				if n > 4096 && i > 300 && i < n-300 && i%997 != 0 {
					continue
				}
				if got := decodeChunks(tc.maxMsg, tc.stream, i); !sameOutcome(got, whole) {
					t.Fatalf("split at %d of %d:\n got  %v\n want %v", i, n, got, whole)
				}
			}
			for range 200 {
				i := rng.IntN(n + 1)
				j := i + rng.IntN(n-i+1)
				if got := decodeChunks(tc.maxMsg, tc.stream, i, j); !sameOutcome(got, whole) {
					t.Fatalf("split at %d and %d of %d:\n got  %v\n want %v", i, j, n, got, whole)
				}
			}
			if got := decodeBytewise(tc.maxMsg, tc.stream); !sameOutcome(got, whole) {
				t.Fatalf("one byte at a time:\n got  %v\n want %v", got, whole)
			}
		})
	}
}

// TestDecoderIdleBetweenMessages: no state is held once a message is done,
// and state is held while one is incomplete.
func TestDecoderIdleBetweenMessages(t *testing.T) {
	var d Decoder
	var r recorder
	f := frame(ws.OpText, true, []byte("hello"))
	if err := d.Feed(f[:3], &r); err != nil {
		t.Fatal(err)
	}
	if d.Idle() {
		t.Fatal("Idle with a partial header buffered")
	}
	if err := d.Feed(f[3:], &r); err != nil {
		t.Fatal(err)
	}
	if !d.Idle() {
		t.Fatal("not Idle after a complete message")
	}
	if err := d.Feed(frame(ws.OpBinary, false, []byte("a")), &r); err != nil {
		t.Fatal(err)
	}
	if d.Idle() {
		t.Fatal("Idle inside a fragmented message")
	}
	if err := d.Feed(frame(ws.OpPing, true, nil), &r); err != nil {
		t.Fatal(err)
	}
	if d.Idle() {
		t.Fatal("Idle after a ping inside a fragmented message")
	}
	if err := d.Feed(frame(ws.OpContinuation, true, []byte("b")), &r); err != nil {
		t.Fatal(err)
	}
	if !d.Idle() {
		t.Fatal("not Idle after the fragmented message ended")
	}
	want := []event{text("hello"), {kind: "ping"}, binMsg("ab")}
	if !sameOutcome(outcome{events: r.events}, outcome{events: want}) {
		t.Fatalf("got %v, want %v", r.events, want)
	}
}

// TestDecoderStop: after Stop (a protocol error) nothing more is parsed.
func TestDecoderStop(t *testing.T) {
	var d Decoder
	var r recorder
	if err := d.Feed(frame(ws.OpText, false, []byte("a")), &r); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	if !d.Idle() {
		t.Fatal("Stop kept partial state")
	}
	if err := d.Feed(frame(ws.OpText, true, []byte("b")), &r); err != nil || len(r.events) != 0 {
		t.Fatalf("after Stop: err %v, events %v", err, r.events)
	}
}

// TestDecoderZeroValueHugeLength: the zero Decoder has no size limit, so a
// header announcing 2^63-1 bytes is legal and must simply wait for payload.
func TestDecoderZeroValueHugeLength(t *testing.T) {
	for _, length := range []uint64{1<<63 - 1, 1<<63 - 14, 1<<63 - 10} {
		t.Run(fmt.Sprint(length), func(t *testing.T) {
			stream := testutil.Concat(testutil.RawFrame(0x80|byte(ws.OpBinary), true, length, nil), []byte("abc"))
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Feed panicked on a header announcing %d bytes: %v", length, r)
					}
				}()
				var d Decoder
				err = d.Feed(stream, &recorder{})
			}()
			if err != nil {
				t.Fatalf("Feed: %v", err)
			}
		})
	}
}

// TestDecoderMaxMessageBoundsBuffering: whatever the headers say, a Decoder
// with MaxMessage never holds more than MaxMessage bytes of a message.
func TestDecoderMaxMessageBoundsBuffering(t *testing.T) {
	const max = 1 << 10
	d := Decoder{MaxMessage: max}
	var r recorder
	stream := testutil.Concat(frame(ws.OpBinary, false, []byte("0123456789")), testutil.RawFrame(byte(ws.OpContinuation), true, 1<<63-1, nil))
	if err := d.Feed(stream, &r); err != nil {
		return // refused at header time: fine
	}
	chunk := bytes.Repeat([]byte{'x'}, 4096)
	for i := 0; i < 64; i++ {
		buf := append([]byte(nil), chunk...)
		if err := d.Feed(buf, &r); err != nil {
			return
		}
		if d.st != nil && len(d.st.msg) > max {
			t.Fatalf("decoder buffers %d bytes of one message with MaxMessage %d and no error", len(d.st.msg), max)
		}
	}
}

// stealHandler's OnClose runs a second Decoder that takes a pooled state
// while the reason slice it was handed is still supposed to be valid.
type stealHandler struct {
	recorder
	reasonAfter string
}

func (h *stealHandler) OnClose(code ws.StatusCode, reason []byte) {
	before := string(reason)
	// Another connection's decoder buffers half a ping on this goroutine.
	var other Decoder
	ping := frame(ws.OpPing, true, []byte("ZZZZZZZZZZZZZZZZZZZZ"))
	_ = other.Feed(ping[:len(ping)-1], &recorder{})
	h.reasonAfter = string(reason)
	h.recorder.OnClose(code, []byte(before))
	other.Release()
}

// TestCloseReasonValidDuringCallback: the Handler contract says a slice is
// valid until the callback returns. A close frame that arrived in pieces
// has its reason in the decoder's pooled state; that state must not go back
// to the pool (where another decoder can take and overwrite it) before
// OnClose returns.
func TestCloseReasonValidDuringCallback(t *testing.T) {
	const reason = "a reason long enough to see"
	f := frame(ws.OpClose, true, testutil.CloseBody(1000, reason))
	for try := 0; try < 20; try++ {
		var d Decoder
		h := &stealHandler{}
		buf := append([]byte(nil), f...)
		if err := d.Feed(buf[:4], h); err != nil {
			t.Fatal(err)
		}
		if err := d.Feed(buf[4:], h); err != nil {
			t.Fatal(err)
		}
		if len(h.events) != 1 || h.events[0].data != reason {
			t.Fatalf("events %v", h.events)
		}
		if h.reasonAfter != reason {
			t.Fatalf("close reason changed during OnClose: %q became %q (its buffer went back to the pool before the callback)", reason, h.reasonAfter)
		}
	}
}

// TestRoundTrip: frames written by AppendFrame and AppendClose, masked as a
// client would, decode to what was encoded.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 65537, 200000} {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			payload := make([]byte, n)
			if op == ws.OpText {
				for i := range payload {
					payload[i] = byte('a' + rng.IntN(26))
				}
			} else {
				for i := range payload {
					payload[i] = byte(rng.Uint32())
				}
			}
			sf := AppendFrame(nil, op, payload)
			if want := HeaderLen(n) + n; len(sf) != want {
				t.Fatalf("AppendFrame(%d bytes) wrote %d bytes, want %d (HeaderLen %d)", n, len(sf), want, HeaderLen(n))
			}
			got := decodeChunks(0, maskServerFrames(t, sf))
			want := []event{{kind: "msg", op: op, data: string(payload)}}
			if got.err != nil || !sameOutcome(outcome{events: got.events}, outcome{events: want}) {
				t.Fatalf("op %d, %d bytes: got %v", op, n, got)
			}
			// Append to a non-empty dst keeps what was there.
			pre := []byte("prefix")
			if sf2 := AppendFrame(pre, op, payload); !bytes.Equal(sf2[:6], []byte("prefix")) || !bytes.Equal(sf2[6:], sf) {
				t.Fatalf("AppendFrame onto a prefix changed the bytes")
			}
		}
	}
	for _, op := range []ws.OpCode{ws.OpPing, ws.OpPong} {
		got := decodeChunks(0, maskServerFrames(t, AppendFrame(nil, op, []byte("beat"))))
		kind := map[ws.OpCode]string{ws.OpPing: "ping", ws.OpPong: "pong"}[op]
		if len(got.events) != 1 || got.events[0] != (event{kind: kind, data: "beat"}) {
			t.Fatalf("%s round trip: %v", kind, got)
		}
	}

	closes := []struct {
		code   ws.StatusCode
		reason string
	}{
		{0, ""},
		{1000, ""},
		{1001, "going away"},
		{1008, "slow consumer"},
		{4100, "über"},
		{1011, strings.Repeat("x", 123)},
	}
	for _, c := range closes {
		got := decodeChunks(0, maskServerFrames(t, AppendClose(nil, c.code, c.reason)))
		want := event{kind: "close", code: c.code, data: c.reason}
		if got.err != nil || len(got.events) != 1 || got.events[0] != want {
			t.Fatalf("AppendClose(%d, %q): got %v", c.code, c.reason, got)
		}
	}

	// A reason over 123 bytes is cut to fit a control frame (125 bytes).
	long := strings.Repeat("y", 200)
	got := decodeChunks(0, maskServerFrames(t, AppendClose(nil, 1000, long)))
	if got.err != nil || len(got.events) != 1 || got.events[0].data != long[:123] {
		t.Fatalf("AppendClose with a 200-byte reason: got %v", got)
	}

	// Cut on a rune boundary: a close reason must be UTF-8 (RFC 6455 5.5.1),
	// so the cut must not leave half a rune for the peer to fail on.
	multi := strings.Repeat("é", 100) // 200 bytes; byte 123 is inside a rune
	got = decodeChunks(0, maskServerFrames(t, AppendClose(nil, 1000, multi)))
	if got.err != nil {
		t.Fatalf("AppendClose with a long multi-byte reason wrote a frame the peer rejects: %v", got.err)
	}
	if r := got.events[0].data; !utf8.ValidString(r) || !strings.HasPrefix(multi, r) || len(r) < 120 {
		t.Fatalf("AppendClose cut the reason to %q", r)
	}
}

// nopHandler counts callbacks without keeping anything.
type nopHandler struct{ n int }

func (h *nopHandler) OnMessage(ws.OpCode, []byte)   { h.n++ }
func (h *nopHandler) OnPing([]byte)                 { h.n++ }
func (h *nopHandler) OnPong([]byte)                 { h.n++ }
func (h *nopHandler) OnClose(ws.StatusCode, []byte) { h.n++ }

// TestFeedWholeFramesDoesNotAllocate: a whole unfragmented frame in the
// read buffer goes to the handler with no allocation (the common case on a
// busy server).
func TestFeedWholeFramesDoesNotAllocate(t *testing.T) {
	frames := map[string][]byte{
		"text 64":       frame(ws.OpText, true, bytes.Repeat([]byte("a"), 64)),
		"text 4096":     frame(ws.OpText, true, bytes.Repeat([]byte("é"), 2048)),
		"binary 70000":  frame(ws.OpBinary, true, bytes.Repeat([]byte{0xff}, 70000)),
		"ping":          frame(ws.OpPing, true, []byte("ping")),
		"pong":          frame(ws.OpPong, true, nil),
		"three at once": testutil.Concat(frame(ws.OpText, true, []byte("x")), frame(ws.OpPing, true, nil), frame(ws.OpBinary, true, []byte("y"))),
	}
	for name, f := range frames {
		t.Run(name, func(t *testing.T) {
			buf := make([]byte, len(f))
			d := Decoder{MaxMessage: 1 << 20}
			h := &nopHandler{}
			allocs := testing.AllocsPerRun(100, func() {
				copy(buf, f) // Feed unmasked the previous copy in place
				if err := d.Feed(buf, h); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("Feed of whole frames: %v allocs per run, want 0", allocs)
			}
			if h.n == 0 || !d.Idle() {
				t.Fatalf("handler called %d times, idle %v", h.n, d.Idle())
			}
		})
	}
}

// ---- UTF-8 ----

// trickyUTF8 are byte strings at the edges of UTF-8's rules.
var trickyUTF8 = []string{
	"", "a", "\x00", "\x7f", "\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xc2\x80", "\xdf\xbf",
	"\xe0\x80\x80", "\xe0\x9f\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
	"\xee\x80\x80", "\xef\xbf\xbf", "\xef\xbf\xbe", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf0\x90\x80\x80",
	"\xf4\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfe", "\xff",
	"\xe2\x82", "\xe2", "\xf0\x9d\x84", "\xf0\x9d", "\xc3", "a\xc3", "\xc3a", "\xe2\x82a", "\xed\xa0\x80\xed\xb0\x80",
	"héllo", "€", "𝄞", "\xef\xbb\xbf", "\xf0\x9f\x98\x80", "12345678\xff", "1234567\xc3\xa9", "12345678\xc3\xa9",
	"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9abcdefgh", "abcdefghijklmnop\xe0\x80\x80", "abcdefgh\x80abcdefgh",
}

// randomUTF8ish builds byte strings that are valid often enough to matter:
// ASCII runs, encoded runes, tricky pieces and random bytes.
func randomUTF8ish(rng *rand.Rand) []byte {
	var p []byte
	for n := rng.IntN(12); n >= 0; n-- {
		switch rng.IntN(6) {
		case 0:
			for k := rng.IntN(20); k > 0; k-- {
				p = append(p, byte(rng.IntN(0x80)))
			}
		case 1, 2:
			r := rune(rng.IntN(0x110000))
			p = utf8.AppendRune(p, r) // surrogates become U+FFFD
		case 3:
			p = append(p, trickyUTF8[rng.IntN(len(trickyUTF8))]...)
		case 4:
			p = append(p, byte(rng.Uint32()))
		case 5:
			// A valid rune with one byte dropped or changed.
			q := utf8.AppendRune(nil, rune(0x80+rng.IntN(0x10ff80)))
			i := rng.IntN(len(q))
			if rng.IntN(2) == 0 {
				q = append(q[:i], q[i+1:]...)
			} else {
				q[i] = byte(rng.Uint32())
			}
			p = append(p, q...)
		}
	}
	return p
}

// stepSplit runs utf8Step over p cut into random pieces.
func stepSplit(rng *rand.Rand, p []byte) uint8 {
	st := uint8(utf8Accept)
	for len(p) > 0 {
		k := 1 + rng.IntN(len(p))
		st = utf8Step(st, p[:k])
		p = p[k:]
	}
	return st
}

func checkUTF8(t *testing.T, rng *rand.Rand, p []byte) {
	t.Helper()
	want := utf8.Valid(p)
	if got := ValidUTF8(p); got != want {
		t.Fatalf("ValidUTF8(% x) = %v, utf8.Valid = %v", p, got, want)
	}
	if got := stepSplit(rng, p) == utf8Accept; got != want {
		t.Fatalf("utf8Step in pieces over % x accepts=%v, utf8.Valid = %v", p, got, want)
	}
	// Byte at a time: a reject must never happen on a valid string.
	st := uint8(utf8Accept)
	for i := range p {
		st = utf8Step(st, p[i:i+1])
		if st == utf8Reject {
			if utf8.Valid(p) {
				t.Fatalf("rejected valid % x at byte %d", p, i)
			}
			break
		}
	}
	if (st == utf8Accept) != want {
		t.Fatalf("utf8Step byte by byte over % x ends in %d, utf8.Valid = %v", p, st, want)
	}
}

func TestUTF8MatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range trickyUTF8 {
		checkUTF8(t, rng, []byte(s))
		// Behind ASCII of every length, so the 8-byte fast path meets the
		// tricky bytes at every alignment.
		for k := 1; k <= 17; k++ {
			checkUTF8(t, rng, append(bytes.Repeat([]byte("A"), k), s...))
			checkUTF8(t, rng, append([]byte(s), bytes.Repeat([]byte("A"), k)...))
		}
	}
	for range 100000 {
		checkUTF8(t, rng, randomUTF8ish(rng))
	}
}

// TestUTF8Exhaustive checks every 1- and 2-byte string, and every 3- and
// 4-byte string whose lead byte starts a multi-byte rune and whose other
// bytes are around the continuation range.
func TestUTF8Exhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var buf [4]byte
	for a := 0; a < 256; a++ {
		buf[0] = byte(a)
		checkUTF8(t, rng, buf[:1])
		for b := 0; b < 256; b++ {
			buf[1] = byte(b)
			if ValidUTF8(buf[:2]) != utf8.Valid(buf[:2]) {
				t.Fatalf("ValidUTF8(% x) disagrees with utf8.Valid", buf[:2])
			}
		}
	}
	var cont []byte // continuation bytes and their neighbours
	for b := 0x7e; b <= 0xc2; b++ {
		cont = append(cont, byte(b))
	}
	for a := 0xe0; a <= 0xf7; a++ {
		buf[0] = byte(a)
		for _, b := range cont {
			buf[1] = b
			for _, c := range cont {
				buf[2] = c
				if ValidUTF8(buf[:3]) != utf8.Valid(buf[:3]) {
					t.Fatalf("ValidUTF8(% x) disagrees with utf8.Valid", buf[:3])
				}
				if a < 0xf0 {
					continue
				}
				for _, d := range []byte{0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0} {
					buf[3] = d
					if ValidUTF8(buf[:4]) != utf8.Valid(buf[:4]) {
						t.Fatalf("ValidUTF8(% x) disagrees with utf8.Valid", buf[:4])
					}
				}
			}
		}
	}
}
