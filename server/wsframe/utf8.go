package wsframe

// utf8 validation that can stop and resume at any byte, so a text message
// split across frames and reads is checked as it arrives (RFC 6455 8.1: an
// endpoint fails the connection as soon as it sees invalid UTF-8).
//
// This is Bjoern Hoehrmann's DFA ("Flexible and Economical UTF-8 Decoder"):
// bytes map to character classes, classes and the state to the next state.
// State 0 accepts; state 12 rejects for good.

const (
	utf8Accept = 0
	utf8Reject = 12
)

var utf8Class = [256]uint8{
	// 0x00..0x7f
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	// 0x80..0x8f
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	// 0x90..0x9f
	9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
	// 0xa0..0xbf
	7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
	// 0xc0..0xdf
	8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	// 0xe0..0xef
	10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3,
	// 0xf0..0xff
	11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
}

var utf8Trans = [108]uint8{
	0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72,
	12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
	12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12,
	12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12,
	12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12,
	12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12,
	12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,
	12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12,
	12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
}

// utf8Step advances the DFA over p and returns the new state. It returns
// utf8Reject as soon as an invalid byte is seen.
func utf8Step(state uint8, p []byte) uint8 {
	i := 0
	for i < len(p) {
		if state == utf8Accept {
			// ASCII fast path: 8 bytes at a time while no high bit is set.
			for i+8 <= len(p) {
				v := uint64(p[i]) | uint64(p[i+1])<<8 | uint64(p[i+2])<<16 | uint64(p[i+3])<<24 |
					uint64(p[i+4])<<32 | uint64(p[i+5])<<40 | uint64(p[i+6])<<48 | uint64(p[i+7])<<56
				if v&0x8080808080808080 != 0 {
					break
				}
				i += 8
			}
			if i == len(p) {
				break
			}
		}
		state = utf8Trans[state+utf8Class[p[i]]]
		if state == utf8Reject {
			return utf8Reject
		}
		i++
	}
	return state
}

// ValidUTF8 reports whether p is complete, valid UTF-8.
func ValidUTF8(p []byte) bool { return utf8Step(utf8Accept, p) == utf8Accept }
