package bench

import (
	"fmt"
	"testing"
)

// The client's per-message work must stay far below the server's: these
// are the receive path (decode + histogram) and the send path (encode +
// frame).

func BenchmarkPayload(b *testing.B) {
	for _, size := range []int{128, 4096} {
		buf := make([]byte, size)
		b.Run(fmt.Sprintf("encode/size=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				EncodePayload(buf, Payload{Phase: 1, Sender: 2, Seq: uint32(i), SentNs: int64(i)})
			}
		})
		EncodePayload(buf, Payload{Phase: 1, Sender: 2, Seq: 3, SentNs: 4})
		b.Run(fmt.Sprintf("decode/size=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				if _, err := DecodePayload(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h ConcurrentHistogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.Record(i, int64(i*977))
			i++
		}
	})
}

func BenchmarkClientFrame(b *testing.B) {
	payload := make([]byte, 128)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for i := 0; i < b.N; i++ {
		buf = AppendClientFrame(buf[:0], OpText, payload, uint32(i))
	}
}

func TestPayloadPathsDoNotAllocate(t *testing.T) {
	buf := make([]byte, 256)
	frame := make([]byte, 0, 512)
	var h ConcurrentHistogram
	allocs := testing.AllocsPerRun(100, func() {
		EncodePayload(buf, Payload{Seq: 7})
		if _, err := DecodePayload(buf); err != nil {
			t.Fatal(err)
		}
		h.Record(1, 12345)
		frame = AppendClientFrame(frame[:0], OpText, buf, 1)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message", allocs)
	}
}
