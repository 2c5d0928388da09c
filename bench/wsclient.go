package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The client side of RFC 6455, as little of it as a load generator needs:
// one TCP socket, a small bufio.Reader, frames built in one buffer and
// written with one syscall. Client frames are masked ("a client MUST mask
// all frames that it sends to the server", RFC 6455 section 5.1), server
// frames are not. It answers pings and close frames itself.

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes used here (RFC 6455 section 7.4.1).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseNoStatus        = 1005 // no code in the close frame
	ClosePolicyViolation = 1008
)

// maxClientMessage bounds what the client assembles from one message, so
// a broken server cannot make the load generator allocate without limit.
const maxClientMessage = 16 << 20

// CloseError is returned by ReadMessage when the server sent a close frame.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("chatbench: server closed the WebSocket with %d %s", e.Code, e.Reason)
}

// ErrHandshake wraps every failed upgrade.
var ErrHandshake = errors.New("chatbench: websocket handshake failed")

// DialOptions says how to open one client connection.
type DialOptions struct {
	Addr    string        // host:port of the server
	Path    string        // request path, e.g. /chat/lobby
	LocalIP net.IP        // source address (nil: the kernel's choice)
	RcvBuf  int           // SO_RCVBUF before connect (0: the default)
	Timeout time.Duration // for the TCP connect and the upgrade together
	ReadBuf int           // bufio.Reader size (0: 2 KiB)
}

// Conn is an open client WebSocket. ReadMessage belongs to one goroutine;
// WriteMessage may be called from any (writes are serialized).
type Conn struct {
	nc   net.Conn
	br   *bufio.Reader
	rbuf []byte // assembly buffer for the current message

	wmu  sync.Mutex
	wbuf []byte
}

// dialer builds a net.Dialer binding to LocalIP without reserving a port at
// bind time (IP_BIND_ADDRESS_NO_PORT): the port is chosen at connect from
// the four-tuple, so many source addresses each get the whole ephemeral
// range.
func dialer(o DialOptions) *net.Dialer {
	d := &net.Dialer{Timeout: o.Timeout}
	if o.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.LocalIP}
	}
	d.Control = func(network, address string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = presetSocket(int(fd), o) }); err != nil {
			return err
		}
		return serr
	}
	return d
}

// presetSocket sets o's socket options on fd before bind and connect:
// with a source address, IP_BIND_ADDRESS_NO_PORT, so that the port is
// chosen at connect from the four-tuple and each source address gets the
// whole ephemeral range (Linux only: see sys_bsd.go); SO_RCVBUF when
// asked.
func presetSocket(fd int, o DialOptions) error {
	if o.LocalIP != nil {
		bindAddressNoPort(fd)
	}
	if o.RcvBuf > 0 {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf)
	}
	return nil
}

// DialTCP opens the TCP connection only (used by attackers that never
// finish the upgrade).
func DialTCP(ctx context.Context, o DialOptions) (net.Conn, error) {
	return dialer(o).DialContext(ctx, "tcp", o.Addr)
}

// UpgradeRequest is the HTTP request that opens a WebSocket at path on
// host, with a fresh random key; it returns the request and the key.
func UpgradeRequest(host, path string) ([]byte, string) {
	var key [24]byte
	newKey(&key)
	return appendUpgradeRequest(nil, host, path, key[:]), string(key[:])
}

// newKey fills key with a Sec-WebSocket-Key: 16 random bytes in base64
// (RFC 6455 section 4.1).
func newKey(key *[24]byte) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	base64.StdEncoding.Encode(key[:], raw[:])
}

func appendUpgradeRequest(dst []byte, host, path string, key []byte) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	return append(dst, "\r\nSec-WebSocket-Version: 13\r\nUser-Agent: chatbench\r\n\r\n"...)
}

const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// appendAccept appends the Sec-WebSocket-Accept a server must answer key
// with: base64(SHA-1(key + GUID)).
func appendAccept(dst, key []byte) []byte {
	var in [24 + len(websocketGUID)]byte
	n := copy(in[:], key)
	n += copy(in[n:], websocketGUID)
	sum := sha1.Sum(in[:n])
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// Dial connects and completes the upgrade. A caller that dials many
// connections in a row uses one Dialer instead (one context registration
// for all of them).
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	d := NewDialer(ctx)
	defer d.Close()
	return d.Dial(o)
}

func (c *Conn) handshake(host, path string) error {
	var key [24]byte
	newKey(&key)
	var reqBuf [256]byte
	req := appendUpgradeRequest(reqBuf[:0], host, path, key[:])
	if _, err := c.nc.Write(req); err != nil {
		// The first write is where a failed connect shows (ECONNREFUSED
		// and the like): the errno stays visible to errors.Is.
		return fmt.Errorf("%w: writing the request: %w", ErrHandshake, err)
	}
	status, err := c.br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("%w: reading the response: %w", ErrHandshake, err)
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("%w: server answered %q", ErrHandshake, bytes.TrimSpace(status))
	}
	var wantBuf [28]byte
	want := appendAccept(wantBuf[:0], key[:])
	accepted := false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("%w: reading the response headers: %w", ErrHandshake, err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			accepted = bytes.Equal(bytes.TrimSpace(value), want)
		}
	}
	if !accepted {
		return fmt.Errorf("%w: missing or wrong Sec-WebSocket-Accept", ErrHandshake)
	}
	return nil
}

// NetConn is the underlying socket.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the socket without a close handshake.
func (c *Conn) Close() error { return c.nc.Close() }

// Abort closes the socket with a reset (SO_LINGER 0), as a dropped client
// looks to the server, and without leaving a TIME_WAIT entry behind.
func (c *Conn) Abort() error {
	if tc, ok := c.nc.(tcpSocket); ok {
		_ = tc.SetLinger(0)
	}
	return c.nc.Close()
}

// WriteMessage sends one masked frame with FIN set.
func (c *Conn) WriteMessage(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendClientFrame(c.wbuf[:0], op, payload, mrand.Uint32())
	_, err := c.nc.Write(c.wbuf)
	return err
}

// AppendClientFrame appends a complete masked frame (FIN set) to dst.
func AppendClientFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	dst = appendFrameHeader(dst, op, len(payload), mask)
	start := len(dst)
	dst = append(dst, payload...)
	maskBytes(dst[start:], mask)
	return dst
}

// appendFrameHeader appends the header of a masked client frame (RFC 6455
// section 5.2): FIN|opcode, MASK|length (7, 7+16 or 7+64 bits), mask key.
func appendFrameHeader(dst []byte, op byte, n int, mask uint32) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return binary.BigEndian.AppendUint32(dst, mask)
}

// maskBytes XORs b with the 4-byte key (key's big-endian bytes in order),
// eight bytes at a time.
func maskBytes(b []byte, key uint32) {
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	k8 := uint64(binary.LittleEndian.Uint32(k[:]))
	k8 |= k8 << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}

// ReadMessage returns the next data message (text or binary, reassembled
// from fragments). Pings are answered and skipped; a close frame is
// answered and returned as *CloseError. The payload is valid until the
// next call.
func (c *Conn) ReadMessage() (op byte, payload []byte, err error) {
	c.rbuf = c.rbuf[:0]
	op = 0
	for {
		fin, fop, body, err := c.readFrame()
		if err != nil {
			return 0, nil, err
		}
		switch fop {
		case OpPing:
			if err := c.WriteMessage(OpPong, body); err != nil {
				return 0, nil, err
			}
			continue
		case OpPong:
			continue
		case OpClose:
			ce := &CloseError{Code: CloseNoStatus}
			if len(body) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(body))
				ce.Reason = string(body[2:])
			}
			// "If an endpoint receives a Close frame and did not previously
			// send a Close frame, the endpoint MUST send a Close frame in
			// response" (section 5.5.1); echo the status code.
			var echo []byte
			if len(body) >= 2 {
				echo = body[:2]
			}
			_ = c.WriteMessage(OpClose, echo)
			return 0, nil, ce
		case OpContinuation:
			if op == 0 {
				return 0, nil, errors.New("chatbench: continuation frame without a message")
			}
		default:
			if op != 0 {
				return 0, nil, errors.New("chatbench: new message inside a fragmented one")
			}
			op = fop
		}
		if fin && len(c.rbuf) == 0 {
			return op, body, nil
		}
		if len(c.rbuf)+len(body) > maxClientMessage {
			return 0, nil, errors.New("chatbench: message over 16 MiB")
		}
		c.rbuf = append(c.rbuf, body...)
		if fin {
			return op, c.rbuf, nil
		}
	}
}

// readFrame reads one frame. A payload that fits the bufio buffer is
// returned in place (valid until the next read); a larger one is copied.
func (c *Conn) readFrame() (fin bool, op byte, body []byte, err error) {
	h, err := c.br.Peek(2)
	if err != nil {
		return false, 0, nil, err
	}
	fin = h[0]&0x80 != 0
	op = h[0] & 0x0F
	masked := h[1]&0x80 != 0
	n := uint64(h[1] & 0x7F)
	hlen := 2
	switch n {
	case 126:
		hlen = 4
	case 127:
		hlen = 10
	}
	if masked {
		hlen += 4
	}
	h, err = c.br.Peek(hlen)
	if err != nil {
		return false, 0, nil, err
	}
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		n = binary.BigEndian.Uint64(h[2:10])
	}
	var mask uint32
	if masked {
		mask = binary.BigEndian.Uint32(h[hlen-4 : hlen])
	}
	if n > maxClientMessage {
		return false, 0, nil, errors.New("chatbench: frame over 16 MiB")
	}
	if _, err := c.br.Discard(hlen); err != nil {
		return false, 0, nil, err
	}
	// Small frames are read in place from the bufio buffer; larger ones
	// into a scratch buffer that is kept for the next message.
	if int(n) <= c.br.Size() {
		body, err = c.br.Peek(int(n))
		if err != nil {
			return false, 0, nil, err
		}
		_, _ = c.br.Discard(int(n))
	} else {
		body = make([]byte, n)
		if _, err := io.ReadFull(c.br, body); err != nil {
			return false, 0, nil, err
		}
	}
	if masked {
		maskBytes(body, mask)
	}
	return fin, op, body, nil
}

// CloseHandshake sends a close frame with code and waits up to wait for
// the server's close (or EOF) before closing the socket, as RFC 6455
// section 7.1.1 asks ("the server SHOULD close the TCP connection first").
// It must not run while another goroutine is in ReadMessage.
func (c *Conn) CloseHandshake(code int, wait time.Duration) error {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	err := c.WriteMessage(OpClose, p[:])
	if err == nil && wait > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(wait))
		for {
			_, _, _, rerr := c.readFrame()
			if rerr != nil {
				break
			}
		}
	}
	c.nc.Close()
	return err
}
