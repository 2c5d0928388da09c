package testutil

import (
	"bytes"
	"encoding/binary"
)

// Mask is the masking key of every masked frame built here. Any key works
// (RFC 6455 5.3); a fixed one keeps failures reproducible. Its bytes are
// below 0x80, so masked ASCII stays ASCII: a benchmark that feeds one
// buffer again and again, unmasked in place by the decoder, feeds valid
// text every time.
var Mask = [4]byte{0x37, 0x7a, 0x21, 0x3d}

// Frame builds one frame with a true length: FIN if fin, rsv in RSV1..RSV3
// (its low three bits), opcode op, and payload, masked with Mask if masked
// (a client MUST mask, RFC 6455 5.1; tests of that rule send it unmasked).
func Frame(fin bool, rsv, op byte, masked bool, payload []byte) []byte {
	b0 := (rsv&0x7)<<4 | op&0x0f
	if fin {
		b0 |= 0x80
	}
	return RawFrame(b0, masked, uint64(len(payload)), payload)
}

// RawFrame builds one frame with every header field given: b0 is FIN, RSV
// and opcode; length is what the header announces, which may differ from
// len(payload) to build truncated or lying frames, and takes the shortest
// of the three forms that holds it (RFC 6455 5.2). When masked, payload is
// masked with Mask. The masking is written out here byte by byte, not
// taken from a WebSocket library, so the tests check a decoder's unmasking
// against an independent implementation.
func RawFrame(b0 byte, masked bool, length uint64, payload []byte) []byte {
	var b1 byte
	if masked {
		b1 = 0x80
	}
	f := []byte{b0}
	switch {
	case length <= 125:
		f = append(f, b1|byte(length))
	case length <= 0xffff:
		f = append(f, b1|126)
		f = binary.BigEndian.AppendUint16(f, uint16(length))
	default:
		f = append(f, b1|127)
		f = binary.BigEndian.AppendUint64(f, length)
	}
	if !masked {
		return append(f, payload...)
	}
	f = append(f, Mask[:]...)
	for i, x := range payload {
		f = append(f, x^Mask[i%4])
	}
	return f
}

// CloseBody is the payload of a close frame: the status code, big-endian,
// then the reason (RFC 6455 5.5.1).
func CloseBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// Concat joins frames into one stream, to be written at once or cut
// anywhere.
func Concat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
