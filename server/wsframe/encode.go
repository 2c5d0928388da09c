package wsframe

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// HeaderLen returns the size of an unmasked server frame header for a
// payload of n bytes.
func HeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendFrame appends one unmasked, final server frame to dst. Server frames
// are never masked (RFC 6455 5.1), so the same bytes serve every receiver.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		dst = append(dst, b0, byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// AppendClose appends a close frame with code and reason (code 0: no body).
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 {
		return append(dst, 0x80|byte(ws.OpClose), 0)
	}
	if len(reason) > 123 {
		// A control frame carries at most 125 bytes; cut on a character
		// boundary so the reason stays valid UTF-8 (RFC 6455 7.1.6).
		cut := 123
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	n := 2 + len(reason)
	dst = append(dst, 0x80|byte(ws.OpClose), byte(n), byte(code>>8), byte(code))
	return append(dst, reason...)
}

// FrameEnd returns where the frame that holds byte off of b ends, for b a
// run of whole server frames (unmasked, as AppendFrame writes them); len(b)
// if b ends first. Used to cut an output queue at a frame boundary.
func FrameEnd(b []byte, off int) int {
	pos := 0
	for pos < len(b) {
		if len(b)-pos < 2 {
			return len(b)
		}
		n, hdr := int64(b[pos+1]&0x7f), int64(2)
		switch n {
		case 126:
			if len(b)-pos < 4 {
				return len(b)
			}
			n, hdr = int64(binary.BigEndian.Uint16(b[pos+2:])), 4
		case 127:
			if len(b)-pos < 10 {
				return len(b)
			}
			n, hdr = int64(binary.BigEndian.Uint64(b[pos+2:])&(1<<63-1)), 10
		}
		end := int64(pos) + hdr + n
		if end > int64(len(b)) {
			return len(b)
		}
		if end > int64(off) {
			return int(end)
		}
		pos = int(end)
	}
	return len(b)
}
