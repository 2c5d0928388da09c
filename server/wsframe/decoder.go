package wsframe

import (
	"encoding/binary"
	"sync"

	"github.com/gobwas/ws"
)

// Handler receives what a Decoder parses. Every slice is valid only until
// the callback returns (it may point into the caller's read buffer).
type Handler interface {
	// OnMessage is called with a complete data message (all fragments
	// joined, unmasked; text already checked to be valid UTF-8).
	OnMessage(op ws.OpCode, payload []byte)
	// OnPing is called for a ping frame, also between fragments.
	OnPing(payload []byte)
	// OnPong is called for a pong frame.
	OnPong(payload []byte)
	// OnClose is called for a valid close frame; code is 0 when the frame
	// had no body. The Decoder ignores every byte after it.
	OnClose(code ws.StatusCode, reason []byte)
}

// MaxHeaderSize is the largest frame header: 2 + 8 (length) + 4 (mask).
const MaxHeaderSize = 14

// Decoder is an incremental WebSocket frame decoder for the server side. Feed
// it bytes as they arrive, split anywhere. Between messages it holds no
// buffer at all: partial state lives in a pooled struct taken only while a
// header, frame or fragmented message is incomplete.
//
// The zero value is ready to use with no size limit; set MaxMessage.
type Decoder struct {
	st *state

	// MaxMessage is the largest data message payload accepted; zero means
	// unlimited. A larger message fails with 1009 as soon as its header
	// announces it. An int32 (2 GiB) keeps the Decoder, which a server holds
	// per connection, at 16 bytes.
	MaxMessage int32
	closed     bool
}

// state is a Decoder's partial work.
type state struct {
	hdr  [MaxHeaderSize]byte
	hdrN int

	inFrame bool
	fop     ws.OpCode
	ffin    bool
	mask    [4]byte
	remain  int64
	maskOff int

	msgOp ws.OpCode // opcode of the data message in progress, 0 if none
	msg   []byte
	utf8  uint8

	ctrl []byte // control frame payload being collected
}

var statePool = sync.Pool{New: func() any { return new(state) }}

// Idle reports whether the Decoder holds no partial frame or message.
func (d *Decoder) Idle() bool { return d.st == nil }

// Release drops any partial state (on connection close).
func (d *Decoder) Release() {
	if d.st != nil {
		d.putState()
	}
}

// Stop makes the Decoder ignore every later byte (after a protocol error).
func (d *Decoder) Stop() {
	d.closed = true
	d.Release()
}

func (d *Decoder) getState() *state {
	if d.st == nil {
		d.st = statePool.Get().(*state)
	}
	return d.st
}

func (d *Decoder) putState() {
	st := d.st
	d.st = nil
	msg := st.msg[:0]
	if cap(msg) > 64<<10 {
		msg = nil // do not pin big buffers in the pool
	}
	ctrl := st.ctrl[:0]
	*st = state{msg: msg, ctrl: ctrl}
	statePool.Put(st)
}

// header is a parsed frame header.
type header struct {
	fin    bool
	rsv    byte
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
}

// parseHeader parses a header from the start of p. ok is false when p does
// not hold a whole header yet.
func parseHeader(p []byte) (h header, n int, ok bool, err error) {
	if len(p) < 2 {
		return h, 0, false, nil
	}
	h.fin = p[0]&0x80 != 0
	h.rsv = (p[0] >> 4) & 0x7
	h.op = ws.OpCode(p[0] & 0x0f)
	h.masked = p[1]&0x80 != 0
	n = 2
	switch l := p[1] & 0x7f; l {
	case 126:
		if len(p) < 4 {
			return h, 0, false, nil
		}
		h.length = int64(binary.BigEndian.Uint16(p[2:4]))
		n = 4
	case 127:
		if len(p) < 10 {
			return h, 0, false, nil
		}
		v := binary.BigEndian.Uint64(p[2:10])
		// RFC 6455 5.2: "the most significant bit MUST be 0".
		if v>>63 != 0 {
			return h, 0, false, errProtocol("frame length has the most significant bit set")
		}
		h.length = int64(v)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(p) < n+4 {
			return h, 0, false, nil
		}
		copy(h.mask[:], p[n:n+4])
		n += 4
	}
	return h, n, true, nil
}

// check applies RFC 6455's rules to a header, given the data message in
// progress (msgOp, msgLen).
func (d *Decoder) check(h header, msgOp ws.OpCode, msgLen int) error {
	// 5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated".
	if h.rsv != 0 {
		return errProtocol("reserved bits set without a negotiated extension")
	}
	// 5.3: "The server MUST close the connection upon receiving a frame
	// that is not masked."
	if !h.masked {
		return errProtocol("client frame is not masked")
	}
	switch h.op {
	case ws.OpContinuation:
		if msgOp == 0 {
			return errProtocol("continuation frame without a message to continue")
		}
	case ws.OpText, ws.OpBinary:
		if msgOp != 0 {
			return errProtocol("new data frame inside a fragmented message")
		}
	case ws.OpClose, ws.OpPing, ws.OpPong:
		// 5.5: "All control frames MUST have a payload length of 125 bytes
		// or less and MUST NOT be fragmented."
		if h.length > 125 {
			return errProtocol("control frame payload over 125 bytes")
		}
		if !h.fin {
			return errProtocol("fragmented control frame")
		}
		return nil
	default:
		return errProtocol("reserved opcode")
	}
	// Compare without adding: a 63-bit length must not wrap the sum.
	if d.MaxMessage > 0 && h.length > int64(d.MaxMessage)-int64(msgLen) {
		return &ProtocolError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	}
	return nil
}

// Feed decodes p. It returns a *ProtocolError when the peer broke the protocol;
// the connection must then be closed with that code. Feed unmasks p in place.
func (d *Decoder) Feed(p []byte, h Handler) error {
	for len(p) > 0 && !d.closed {
		if d.st == nil {
			hd, n, ok, err := parseHeader(p)
			if err != nil {
				return err
			}
			if !ok {
				st := d.getState()
				st.hdrN = copy(st.hdr[:], p)
				return nil
			}
			if err := d.check(hd, 0, 0); err != nil {
				return err
			}
			if hd.length <= int64(len(p)-n) && (hd.fin || hd.op.IsControl()) {
				// Fast path: a whole unfragmented frame is in p. Unmask in
				// place and hand it over without copying.
				end := n + int(hd.length)
				payload := p[n:end]
				ws.Cipher(payload, hd.mask, 0)
				if err := d.complete(hd.op, payload, h); err != nil {
					return err
				}
				p = p[end:]
				continue
			}
			d.startFrame(d.getState(), hd)
			p = p[n:]
			if err := d.maybeFinishFrame(h); err != nil {
				return err
			}
			continue
		}
		st := d.st
		if !st.inFrame {
			old := st.hdrN
			k := copy(st.hdr[old:], p)
			hd, n, ok, err := parseHeader(st.hdr[:old+k])
			if err != nil {
				return err
			}
			if !ok {
				st.hdrN = old + k
				return nil
			}
			st.hdrN = 0
			if err := d.check(hd, st.msgOp, len(st.msg)); err != nil {
				return err
			}
			d.startFrame(st, hd)
			p = p[n-old:]
			if err := d.maybeFinishFrame(h); err != nil {
				return err
			}
			continue
		}
		k := int64(len(p))
		if k > st.remain {
			k = st.remain
		}
		chunk := p[:k]
		p = p[k:]
		ws.Cipher(chunk, st.mask, st.maskOff)
		st.maskOff += int(k)
		st.remain -= k
		if st.fop.IsControl() {
			st.ctrl = append(st.ctrl, chunk...)
		} else {
			if st.msgOp == ws.OpText {
				// Fail fast on invalid UTF-8, before the message ends.
				if st.utf8 = utf8Step(st.utf8, chunk); st.utf8 == utf8Reject {
					return errInvalidUTF8
				}
			}
			st.msg = append(st.msg, chunk...)
		}
		if err := d.maybeFinishFrame(h); err != nil {
			return err
		}
	}
	return nil
}

func (d *Decoder) startFrame(st *state, hd header) {
	st.inFrame = true
	st.fop = hd.op
	st.ffin = hd.fin
	st.mask = hd.mask
	st.remain = hd.length
	st.maskOff = 0
	if hd.op == ws.OpText || hd.op == ws.OpBinary {
		st.msgOp = hd.op
		st.utf8 = utf8Accept
	}
	if hd.op.IsControl() {
		st.ctrl = st.ctrl[:0]
	}
}

// maybeFinishFrame completes the current frame once its payload is in.
func (d *Decoder) maybeFinishFrame(h Handler) error {
	st := d.st
	if !st.inFrame || st.remain > 0 {
		return nil
	}
	st.inFrame = false
	var err error
	switch {
	case st.fop.IsControl():
		err = d.complete(st.fop, st.ctrl, h)
	case st.ffin:
		op := st.msgOp
		if op == ws.OpText && st.utf8 != utf8Accept {
			return errInvalidUTF8
		}
		h.OnMessage(op, st.msg)
		st.msgOp = 0
		st.msg = st.msg[:0]
	}
	if d.st != nil && !d.st.inFrame && d.st.msgOp == 0 && d.st.hdrN == 0 {
		d.putState()
	}
	return err
}

// complete handles a whole frame that needs no more joining: a control frame
// or an unfragmented data message.
func (d *Decoder) complete(op ws.OpCode, payload []byte, h Handler) error {
	switch op {
	case ws.OpText:
		if !ValidUTF8(payload) {
			return errInvalidUTF8
		}
		h.OnMessage(op, payload)
	case ws.OpBinary:
		h.OnMessage(op, payload)
	case ws.OpPing:
		h.OnPing(payload)
	case ws.OpPong:
		h.OnPong(payload)
	case ws.OpClose:
		code, reason, err := ParseClose(payload)
		if err != nil {
			return err
		}
		d.closed = true
		// reason may point into the pooled state: release it only after
		// the callback.
		h.OnClose(code, reason)
		if d.st != nil {
			d.putState()
		}
	}
	return nil
}

// ParseClose validates a close frame body (RFC 6455 5.5.1, 7.4).
func ParseClose(p []byte) (ws.StatusCode, []byte, error) {
	switch {
	case len(p) == 0:
		return 0, nil, nil
	case len(p) == 1:
		return 0, nil, errProtocol("close frame body of one byte")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return 0, nil, errProtocol("invalid close code")
	}
	reason := p[2:]
	if !ValidUTF8(reason) {
		return 0, nil, &ProtocolError{Code: ws.StatusInvalidFramePayloadData, Reason: "close reason is not valid UTF-8"}
	}
	return code, reason, nil
}

// ValidCloseCode reports whether a peer may send code (RFC 6455 7.4.1 and
// the IANA registry): 1005, 1006 and 1015 are never sent on the wire.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
