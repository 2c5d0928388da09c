package wsframe

import (
	"bytes"
	"fmt"
	"testing"

	"chatd/bench/testutil"

	"github.com/gobwas/ws"
)

// The benchmarks feed the same buffer again and again. Feed unmasks in
// place, so the payload flips between masked and unmasked bytes; because the
// payload is ASCII and testutil.Mask's bytes are below 0x80, both forms are valid
// ASCII text and every iteration does the full work (unmask + UTF-8 check)
// without a copy in the timed loop.

// BenchmarkDecode measures Decoder.Feed on whole frames in one read (the
// fast path) and on a message fragmented into four frames (the pooled
// state path).
func BenchmarkDecode(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			benchFeedMessage(b, frame(ws.OpText, true, bytes.Repeat([]byte("0123456789abcdef"), size/16)), size)
		})
	}
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("fragmented/size=%d", size), func(b *testing.B) {
			payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			q := size / 4
			benchFeedMessage(b, testutil.Concat(frame(ws.OpText, false, payload[:q]), frame(ws.OpContinuation, false, payload[q:2*q]),
				frame(ws.OpContinuation, false, payload[2*q:3*q]), frame(ws.OpContinuation, true, payload[3*q:])), size)
		})
	}
	b.Run("split/size=1024", func(b *testing.B) {
		// A frame that arrives in two reads, cut in the middle of its
		// payload: the partial-frame path.
		buf := frame(ws.OpText, true, bytes.Repeat([]byte("0123456789abcdef"), 64))
		half := len(buf) / 2
		d := Decoder{MaxMessage: 1 << 20}
		h := &nopHandler{}
		b.SetBytes(1 << 10)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := d.Feed(buf[:half], h); err != nil {
				b.Fatal(err)
			}
			if err := d.Feed(buf[half:], h); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchFeedMessage feeds buf, the frames of one message of size payload
// bytes, to a Decoder in one read per op.
func benchFeedMessage(b *testing.B, buf []byte, size int) {
	b.Helper()
	d := Decoder{MaxMessage: 1 << 20}
	h := &nopHandler{}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := d.Feed(buf, h); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if h.n != b.N {
		b.Fatalf("%d messages for %d feeds of one", h.n, b.N)
	}
}
