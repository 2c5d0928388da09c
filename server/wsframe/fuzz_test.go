package wsframe

import (
	"testing"
	"unicode/utf8"

	"chatd/bench/testutil"

	"github.com/gobwas/ws"
)

// fuzzMaxMessage is small so that the fuzzer reaches the 1009 paths.
const fuzzMaxMessage = 1 << 10

// fuzzSeedStreams are valid client streams; the fuzzer starts from these,
// each cut at every byte.
func fuzzSeedStreams() [][]byte {
	return [][]byte{
		frame(ws.OpText, true, []byte("hello")),
		frame(ws.OpText, true, []byte("héllo ✓ 𝄞")),
		frame(ws.OpBinary, true, []byte{0, 1, 2, 0xff}),
		frame(ws.OpText, true, nil),
		frame(ws.OpBinary, true, make([]byte, 130)), // 16-bit length
		testutil.Concat(frame(ws.OpText, false, []byte("frag")), frame(ws.OpContinuation, false, []byte("men\xc3")),
			frame(ws.OpContinuation, true, []byte("\xa9ted"))),
		testutil.Concat(frame(ws.OpText, false, []byte("ab")), frame(ws.OpPing, true, []byte("ping")),
			frame(ws.OpContinuation, true, []byte("cd"))),
		testutil.Concat(frame(ws.OpBinary, false, []byte{1}), frame(ws.OpPong, true, nil), frame(ws.OpContinuation, true, []byte{2})),
		frame(ws.OpPing, true, []byte("are you there")),
		frame(ws.OpClose, true, nil),
		frame(ws.OpClose, true, testutil.CloseBody(1000, "bye")),
		testutil.Concat(frame(ws.OpText, true, []byte("last")), frame(ws.OpClose, true, testutil.CloseBody(1001, "going")), frame(ws.OpText, true, []byte("ignored"))),
	}
}

// fuzzDecode is decodeChunks plus the invariants every run must keep:
// delivered text is valid UTF-8, messages and buffered state stay within
// MaxMessage, control payloads within 125 bytes, close codes and reasons
// valid.
func fuzzDecode(t *testing.T, stream []byte, cuts ...int) outcome {
	t.Helper()
	buf := append([]byte(nil), stream...)
	d := Decoder{MaxMessage: fuzzMaxMessage}
	h := &checkingHandler{t: t}
	var err error
	prev := 0
	for _, c := range append(cuts, len(buf)) {
		if err = d.Feed(buf[prev:c], h); err != nil {
			break
		}
		if d.st != nil && len(d.st.msg) > fuzzMaxMessage {
			t.Fatalf("decoder buffers %d bytes of a message, MaxMessage %d", len(d.st.msg), fuzzMaxMessage)
		}
		prev = c
	}
	if err != nil && closeCode(err) == 1 {
		t.Fatalf("Feed returned %T %v, want a *ProtocolError", err, err)
	}
	d.Release()
	return outcome{events: h.events, code: closeCode(err), err: err}
}

type checkingHandler struct {
	recorder
	t      *testing.T
	closed bool
}

func (h *checkingHandler) OnMessage(op ws.OpCode, p []byte) {
	h.checkOpen()
	if op != ws.OpText && op != ws.OpBinary {
		h.t.Fatalf("OnMessage with opcode %d", op)
	}
	if op == ws.OpText && !utf8.Valid(p) {
		h.t.Fatalf("decoder delivered invalid UTF-8 text: % x", p)
	}
	if len(p) > fuzzMaxMessage {
		h.t.Fatalf("decoder delivered %d bytes, MaxMessage %d", len(p), fuzzMaxMessage)
	}
	h.recorder.OnMessage(op, p)
}

func (h *checkingHandler) OnPing(p []byte) {
	h.checkOpen()
	h.checkControl(p)
	h.recorder.OnPing(p)
}

func (h *checkingHandler) OnPong(p []byte) {
	h.checkOpen()
	h.checkControl(p)
	h.recorder.OnPong(p)
}

func (h *checkingHandler) OnClose(code ws.StatusCode, reason []byte) {
	h.checkOpen()
	h.closed = true
	if code != 0 && !ValidCloseCode(code) {
		h.t.Fatalf("OnClose with invalid code %d", code)
	}
	if code == 0 && len(reason) != 0 {
		h.t.Fatalf("OnClose with no code but reason %q", reason)
	}
	if !utf8.Valid(reason) || len(reason) > 123 {
		h.t.Fatalf("OnClose with reason % x", reason)
	}
	h.recorder.OnClose(code, reason)
}

func (h *checkingHandler) checkOpen() {
	if h.closed {
		h.t.Fatal("callback after OnClose")
	}
}

func (h *checkingHandler) checkControl(p []byte) {
	if len(p) > 125 {
		h.t.Fatalf("control payload of %d bytes", len(p))
	}
}

// FuzzFrameParser feeds arbitrary bytes to a Decoder whole, in two pieces
// cut at split, and in pieces of a few bytes: none may panic, and all must
// produce the same callbacks and the same error.
func FuzzFrameParser(f *testing.F) {
	for _, s := range fuzzSeedStreams() {
		for i := 0; i <= len(s); i++ {
			f.Add(s, uint16(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole := fuzzDecode(t, data)
		cut := int(split) % (len(data) + 1)
		if got := fuzzDecode(t, data, cut); !sameOutcome(got, whole) {
			t.Fatalf("cut at %d of %d:\n got  %v\n want %v", cut, len(data), got, whole)
		}
		stride := 1 + int(split>>8)%7
		var cuts []int
		for i := stride; i < len(data); i += stride {
			cuts = append(cuts, i)
		}
		if got := fuzzDecode(t, data, cuts...); !sameOutcome(got, whole) {
			t.Fatalf("pieces of %d bytes:\n got  %v\n want %v", stride, got, whole)
		}
	})
}

// FuzzTextUTF8 wraps arbitrary bytes in a text message, whole or in
// fragments, cut into reads anywhere: it is delivered exactly when it is
// valid UTF-8, and fails with 1007 otherwise.
func FuzzTextUTF8(f *testing.F) {
	for _, s := range trickyUTF8 {
		f.Add([]byte(s), uint8(0), uint8(0))
		f.Add([]byte(s), uint8(1), uint8(3))
	}
	f.Add([]byte("abcdefgh\xc3\xa9abcdefgh\xe2\x82\xac"), uint8(3), uint8(5))
	f.Fuzz(func(t *testing.T, payload []byte, frags, read uint8) {
		if len(payload) > fuzzMaxMessage {
			return
		}
		// frags+1 fragments of about equal size.
		n := int(frags)%8 + 1
		var stream []byte
		for i := 0; i < n; i++ {
			lo, hi := i*len(payload)/n, (i+1)*len(payload)/n
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			stream = append(stream, frame(op, i == n-1, payload[lo:hi])...)
		}
		var cuts []int
		if step := int(read); step > 0 {
			for i := step; i < len(stream); i += step {
				cuts = append(cuts, i)
			}
		}
		got := fuzzDecode(t, stream, cuts...)
		if utf8.Valid(payload) {
			if got.err != nil || len(got.events) != 1 || got.events[0].data != string(payload) {
				t.Fatalf("valid text % x: got %v", payload, got)
			}
			return
		}
		if got.code != ws.StatusInvalidFramePayloadData || len(got.events) != 0 {
			t.Fatalf("invalid text % x: got %v (code %d), want 1007 and no message", payload, got, got.code)
		}
	})
}
