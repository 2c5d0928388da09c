package bench

import (
	"errors"
	"hash/crc32"
)

// A broadcast payload is plain ASCII, so servers that only pass text
// frames (the PHP seed, browsers) carry it unchanged:
//
//	offset  size  field
//	0       2     magic "cb"
//	2       4     phase tag, hex: which measured phase sent it
//	6       6     sender index, hex
//	12      8     sequence number within the sender, hex
//	20      16    send time, Unix nanoseconds, hex
//	36      8     CRC-32C of every other byte of the payload, hex
//	44      ...   filler letters up to the requested size
//
// The receiver checks magic, phase and checksum (corrupt otherwise), then
// uses sender and sequence for loss, duplicate and order accounting and the
// send time for latency. Sender and receiver may live in different worker
// processes: the wall clock is the one clock they share.
const (
	PayloadHeaderSize = 44
	payloadMagic      = "cb"
)

// Payload is the decoded header of a broadcast message.
type Payload struct {
	Phase  uint16
	Sender uint32 // < 1<<24
	Seq    uint32
	SentNs int64
}

var (
	errPayloadShort = errors.New("chatbench: payload shorter than its header")
	errPayloadMagic = errors.New("chatbench: payload has no chatbench magic")
	errPayloadHex   = errors.New("chatbench: payload header is not hex")
	errPayloadCRC   = errors.New("chatbench: payload checksum mismatch")
)

var (
	crcTable = crc32.MakeTable(crc32.Castagnoli)
	filler   = func() []byte {
		b := make([]byte, 64<<10+26)
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		return b
	}()
)

const hexDigits = "0123456789abcdef"

func putHex(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hexDigits[v&15]
		v >>= 4
	}
}

func parseHex(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// EncodePayload fills b (whose length is the message size, at least
// PayloadHeaderSize) with p and a checksum.
func EncodePayload(b []byte, p Payload) {
	if len(b) < PayloadHeaderSize {
		panic("chatbench: payload buffer shorter than header")
	}
	copy(b[0:2], payloadMagic)
	putHex(b[2:6], uint64(p.Phase))
	putHex(b[6:12], uint64(p.Sender))
	putHex(b[12:20], uint64(p.Seq))
	putHex(b[20:36], uint64(p.SentNs))
	rest := b[PayloadHeaderSize:]
	off := int(p.Seq % 26)
	for len(rest) > 0 {
		n := copy(rest, filler[off:])
		rest = rest[n:]
		off = 0
	}
	putHex(b[36:44], uint64(payloadCRC(b)))
}

func payloadCRC(b []byte) uint32 {
	c := crc32.Update(0, crcTable, b[:36])
	return crc32.Update(c, crcTable, b[PayloadHeaderSize:])
}

// DecodePayload parses and verifies a message produced by EncodePayload.
func DecodePayload(b []byte) (Payload, error) {
	if len(b) < PayloadHeaderSize {
		return Payload{}, errPayloadShort
	}
	if string(b[0:2]) != payloadMagic {
		return Payload{}, errPayloadMagic
	}
	phase, ok1 := parseHex(b[2:6])
	sender, ok2 := parseHex(b[6:12])
	seq, ok3 := parseHex(b[12:20])
	sent, ok4 := parseHex(b[20:36])
	sum, ok5 := parseHex(b[36:44])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return Payload{}, errPayloadHex
	}
	if uint32(sum) != payloadCRC(b) {
		return Payload{}, errPayloadCRC
	}
	return Payload{Phase: uint16(phase), Sender: uint32(sender), Seq: uint32(seq), SentNs: int64(sent)}, nil
}

// seqTracker follows, for one receiver and one sender, which sequence
// numbers have arrived: next is one past the highest seen, and window
// holds a bit for each of the 64 numbers below next. A number below the
// window counts as a duplicate: the server keeps one sender's messages in
// order on one connection, so anything that far back was seen already.
type seqTracker struct {
	next   uint32
	window uint64 // bit i set: next-1-i arrived
}

// seqVerdict is what one arrival means for the accounting.
type seqVerdict uint8

const (
	seqNew       seqVerdict = iota // first copy, in order (possibly after a gap)
	seqLate                        // first copy, but after a later number
	seqDuplicate                   // seen before
)

func (t *seqTracker) observe(seq uint32) seqVerdict {
	switch {
	case seq >= t.next:
		shift := uint64(seq) - uint64(t.next) + 1
		if shift >= 64 {
			t.window = 0
		} else {
			t.window <<= shift
		}
		t.window |= 1
		t.next = seq + 1
		return seqNew
	default:
		back := uint64(t.next) - 1 - uint64(seq)
		if back >= 64 {
			return seqDuplicate
		}
		bit := uint64(1) << back
		if t.window&bit != 0 {
			return seqDuplicate
		}
		t.window |= bit
		return seqLate
	}
}
