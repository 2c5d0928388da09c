package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Hostile connection kinds, beyond the stalls of dialMember: half-close,
// garbage and http-stall connections, what they send and how they are
// watched; and the trickle of bytes with which stalled ones defeat
// timeouts that only count silence.

// trickleEvery is how often a trickling attacker sends one more byte.
const trickleEvery = time.Second

// maxTrickle bounds the bytes one attacker trickles: the stalled frame
// announces 1000 bytes and sends 10 at once, so 900 more never finish it.
const maxTrickle = 900

// trickle sends one more byte to every open stalled attacker of ms each
// interval: mid-handshake ones extend the header line they stopped in,
// mid-frame ones add a payload byte. It stops when none is left open.
func trickle(ms []*member, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	b := []byte{'a'}
	for sent := 0; sent < maxTrickle; sent++ {
		<-tick.C
		alive := 0
		for _, m := range ms {
			if !m.open() {
				continue
			}
			alive++
			nc := m.raw
			if nc == nil {
				nc = m.conn.nc
			}
			_ = nc.SetWriteDeadline(time.Now().Add(every))
			_, _ = nc.Write(b)
		}
		if alive == 0 {
			return
		}
	}
}

var halfCloseMessage = []byte("chatbench: half-close")

// halfClose writes b and shuts the socket for writing; corked, b and the
// FIN leave in one segment.
func halfClose(nc net.Conn, cork bool, b []byte) error {
	tc, ok := nc.(tcpSocket)
	if !ok {
		return errors.New("chatbench: half-close needs a TCP connection")
	}
	if cork {
		if err := setCork(tc); err != nil {
			return err
		}
	}
	if _, err := tc.Write(b); err != nil {
		return err
	}
	return tc.CloseWrite()
}

// setCork sets TCP_CORK (TCP_NOPUSH on macOS/BSD): nothing leaves until the socket is uncorked or
// shut down (which sends what is queued with the FIN).
func setCork(tc syscall.Conn) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, corkOption, 1) }); err != nil {
		return err
	}
	return serr
}

// dialHostile sets up a half-close, garbage or http-stall connection:
// it connects and sends what that kind sends.
func dialHostile(ctx context.Context, m *member, kind string, o DialOptions, id int) error {
	switch kind {
	case KindHalfClose:
		// A whole message and right behind it the FIN: the client has
		// nothing more to say but still listens. RFC 6455 section 7.1.1:
		// the TCP connection is closed by the server first, after the
		// close handshake; a server that misses this FIN holds the
		// socket until some timeout. Three ways in turn: after the
		// upgrade, the message and the FIN in one segment (the socket
		// corked) or in two; or the upgrade request, the message and
		// the FIN in one segment, before the server has answered.
		switch id % 3 {
		case 0, 1:
			c, err := Dial(ctx, o)
			if err != nil {
				return err
			}
			if err := halfClose(c.nc, id%3 == 0, AppendClientFrame(nil, OpText, halfCloseMessage, mrand.Uint32())); err != nil {
				c.Close()
				return err
			}
			m.conn = c
		case 2:
			nc, err := dialRaw(ctx, o)
			if err != nil {
				return err
			}
			req, _ := UpgradeRequest(o.Addr, o.Path)
			if err := halfClose(nc, true, AppendClientFrame(req, OpText, halfCloseMessage, mrand.Uint32())); err != nil {
				nc.Close()
				return err
			}
			m.raw = nc
		}
	case KindGarbage:
		v := garbageVariants[id%len(garbageVariants)]
		if v.beforeUpgrade {
			nc, err := dialRaw(ctx, o)
			if err != nil {
				return err
			}
			if _, err := nc.Write(v.bytes()); err != nil {
				nc.Close()
				return err
			}
			m.raw = nc
			break
		}
		c, err := Dial(ctx, o)
		if err != nil {
			return err
		}
		if _, err := c.nc.Write(v.bytes()); err != nil {
			c.Close()
			return err
		}
		m.conn = c
	case KindHTTPStall:
		nc, err := dialRaw(ctx, o)
		if err != nil {
			return err
		}
		if _, err := nc.Write(httpStallRequest(o.Addr, o.Path)); err != nil {
			nc.Close()
			return err
		}
		m.raw = nc
	}
	return nil
}

// garbageVariants are what garbage clients send, one variant per
// connection in turn: after the upgrade, a frame RFC 6455 says the server
// must fail the connection for; or, instead of an HTTP request, bytes
// that are none.
var garbageVariants = []struct {
	name          string
	beforeUpgrade bool
	bytes         func() []byte
}{
	// Section 5.1: "a server MUST close the connection upon receiving a
	// frame that is not masked".
	{"unmasked frame", false, func() []byte { return []byte{0x80 | OpText, 5, 'h', 'e', 'l', 'l', 'o'} }},
	// Section 5.2: "If an unknown opcode is received, the receiving
	// endpoint MUST _Fail the WebSocket Connection_."
	{"reserved opcode 0x3", false, func() []byte { return AppendClientFrame(nil, 0x3, []byte("x"), mrand.Uint32()) }},
	// Section 5.2: RSV1 "MUST be 0 unless an extension is negotiated".
	{"RSV1 without extension", false, func() []byte {
		b := AppendClientFrame(nil, OpText, []byte("x"), mrand.Uint32())
		b[0] |= 0x40
		return b
	}},
	// Section 5.5: "All control frames MUST have a payload length of 125
	// bytes or less and MUST NOT be fragmented."
	{"126-byte ping", false, func() []byte { return AppendClientFrame(nil, OpPing, make([]byte, 126), mrand.Uint32()) }},
	{"fragmented ping", false, func() []byte {
		b := AppendClientFrame(nil, OpPing, []byte("x"), mrand.Uint32())
		b[0] &^= 0x80
		return b
	}},
	// Section 8.1: text that is not UTF-8 fails the connection (1007).
	{"invalid UTF-8 text", false, func() []byte { return AppendClientFrame(nil, OpText, []byte{0xff, 0xfe, 0xfd}, mrand.Uint32()) }},
	// Section 5.4: a continuation frame continues nothing.
	{"continuation without a message", false, func() []byte {
		return AppendClientFrame(nil, OpContinuation, []byte("x"), mrand.Uint32())
	}},
	// A header announcing 1 TiB: over any message limit (1009), to be
	// refused before a byte of it is buffered.
	{"1 TiB frame header", false, func() []byte { return appendFrameHeader(nil, OpBinary, 1<<40, mrand.Uint32()) }},
	// Not HTTP at all (a TLS ClientHello's first bytes), but a complete
	// head, so only a parser can reject it.
	{"not HTTP", true, func() []byte { return []byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n") }},
}

// httpStallRequest is a plain HTTP request that announces a body of 1000
// bytes and sends 10 of them: unless the server times the body out, the
// connection (and whatever serves it) is held for as long as the client
// likes.
func httpStallRequest(host, path string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nUser-Agent: chatbench\r\n\r\n" + `{"name":"s`)
}

// httpAnswerError is how a plain HTTP connection ended after the server
// answered it: the status code, then the error that ended the reading.
type httpAnswerError struct {
	status string
	err    error
}

func (e *httpAnswerError) Error() string {
	return fmt.Sprintf("chatbench: the server answered %s, then: %v", e.status, e.err)
}

func (e *httpAnswerError) Unwrap() error { return e.err }

// watchHTTP is watch for a connection that sent (something instead of)
// an HTTP request: it also notes the status of a response, if the server
// sent one before it closed.
func watchHTTP(m *member, r io.Reader) {
	defer close(m.done)
	buf := make([]byte, 512)
	status := ""
	for first := true; ; first = false {
		n, err := r.Read(buf)
		if p := buf[:n]; first && len(p) >= 12 && bytes.HasPrefix(p, []byte("HTTP/1.")) {
			status = string(p[9:12])
		}
		if err != nil {
			if status != "" {
				err = &httpAnswerError{status: status, err: err}
			}
			m.ended(err)
			return
		}
	}
}

// discard reads and drops messages until the connection ends, to see how
// the server ends it (a close code, EOF, a reset).
func discard(m *member) {
	defer close(m.done)
	for {
		if _, _, err := m.conn.ReadMessage(); err != nil {
			m.ended(err)
			return
		}
	}
}
