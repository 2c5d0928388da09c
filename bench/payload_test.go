package bench

import (
	"bytes"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{PayloadHeaderSize, PayloadHeaderSize + 1, 128, 4096, 70000} {
		p := Payload{Phase: 0xbeef, Sender: 0xabcdef, Seq: 4000000000, SentNs: 1732590000123456789}
		b := make([]byte, size)
		EncodePayload(b, p)
		for _, c := range b {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("size %d: payload byte %q is not printable ASCII", size, c)
			}
		}
		got, err := DecodePayload(b)
		if err != nil || got != p {
			t.Fatalf("size %d: got %+v, %v; want %+v", size, got, err, p)
		}
	}
}

func TestPayloadDetectsCorruption(t *testing.T) {
	b := make([]byte, 200)
	EncodePayload(b, Payload{Phase: 1, Sender: 2, Seq: 3, SentNs: 4})
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := DecodePayload(c); err == nil {
			t.Errorf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := DecodePayload(b[:PayloadHeaderSize-1]); err != errPayloadShort {
		t.Errorf("short payload: %v", err)
	}
	if _, err := DecodePayload(b[:len(b)-1]); err != errPayloadCRC {
		t.Errorf("truncated payload: %v", err)
	}
	if _, err := DecodePayload([]byte("hello, this is a chat message from a browser tab")); err != errPayloadMagic {
		t.Errorf("foreign message: %v", err)
	}
}

func TestSyncProbeIsNotAPayload(t *testing.T) {
	p := syncProbe(0x1234abcd)
	n, ok := decodeSyncProbe(p)
	if !ok || n != 0x1234abcd {
		t.Fatalf("decodeSyncProbe = %x, %v", n, ok)
	}
	if _, err := DecodePayload(p); err == nil {
		t.Errorf("a sync probe decodes as a payload")
	}
	b := make([]byte, 64)
	EncodePayload(b, Payload{})
	if _, ok := decodeSyncProbe(b); ok {
		t.Errorf("a payload decodes as a sync probe")
	}
}

func TestSeqTracker(t *testing.T) {
	const (
		n = seqNew
		l = seqLate
		d = seqDuplicate
	)
	for _, c := range []struct {
		name string
		seqs []uint32
		want []seqVerdict
	}{
		{"in order", []uint32{0, 1, 2, 3}, []seqVerdict{n, n, n, n}},
		{"duplicate", []uint32{0, 1, 1, 0}, []seqVerdict{n, n, d, d}},
		{"gap then late arrival", []uint32{0, 3, 1, 2, 2}, []seqVerdict{n, n, l, l, d}},
		{"first message not zero", []uint32{5, 0, 5}, []seqVerdict{n, l, d}},
		{"far behind the window counts as duplicate", []uint32{0, 100, 1}, []seqVerdict{n, n, d}},
		{"window edge", []uint32{0, 64, 1, 63}, []seqVerdict{n, n, l, l}},
	} {
		var tr seqTracker
		for i, s := range c.seqs {
			if got := tr.observe(s); got != c.want[i] {
				t.Errorf("%s: seq %d (#%d) = %v, want %v", c.name, s, i, got, c.want[i])
			}
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	b := make([]byte, 100)
	EncodePayload(b, Payload{Phase: 7, Sender: 1, Seq: 2, SentNs: 3})
	f.Add(b)
	f.Add([]byte("cs00000001"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		got, err := DecodePayload(p)
		if err != nil {
			return
		}
		// Anything accepted re-encodes to the same bytes.
		again := make([]byte, len(p))
		EncodePayload(again, got)
		if !bytes.Equal(again, p) {
			t.Fatalf("accepted payload does not re-encode identically")
		}
	})
}
