package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"chatd/bench/testutil"

	gorilla "github.com/gorilla/websocket"
)

// End-to-end RFC 6455 conformance of the server side, over real sockets.
// Malformed input is written by hand (testutil.Frame); a real client library
// (gorilla) plays the other member of a room where a valid client suffices.

// Opcodes (RFC 6455 5.2).
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// ioWait bounds every read that expects the server to act.
const ioWait = 3 * time.Second

// rawUpgrade dials s, performs a valid handshake for path and checks the 101.
func rawUpgrade(t testing.TB, s *Server, path string) *testutil.UpgradedConn {
	t.Helper()
	c, err := testutil.Upgrade(dialRaw(t, s), s.Addr().String(), path, ioWait)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeFrame writes one frame built by testutil.Frame in a single write.
func writeFrame(t testing.TB, c net.Conn, fin bool, rsv, op byte, masked bool, payload []byte) {
	t.Helper()
	writeBytes(t, c, testutil.Frame(fin, rsv, op, masked, payload))
}

func writeBytes(t testing.TB, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(ioWait))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readFrame reads one server frame. Server frames must be unmasked and
// carry no RSV bits (RFC 6455 5.1, 5.2); either is reported as an error.
func readFrame(r io.Reader) (fin bool, op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return false, 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return false, 0, nil, errors.New("server frame is masked (RFC 6455 5.1: a server MUST NOT mask)")
	}
	if h[0]&0x70 != 0 {
		return false, 0, nil, fmt.Errorf("server frame has RSV bits %#x", h[0]&0x70)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 16<<20 {
		return false, 0, nil, fmt.Errorf("server frame announces %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return false, 0, nil, err
	}
	return h[0]&0x80 != 0, h[0] & 0x0f, payload, nil
}

// mustReadFrame reads one server frame within ioWait.
func mustReadFrame(t testing.TB, c net.Conn) (fin bool, op byte, payload []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	fin, op, payload, err := readFrame(c)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return fin, op, payload
}

// expectCloseFrame reads frames until a close frame and returns its body.
func expectCloseFrame(t testing.TB, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	for {
		fin, op, p, err := readFrame(c)
		if err != nil {
			t.Fatalf("waiting for a close frame: %v", err)
		}
		if op == opClose {
			if !fin {
				t.Fatalf("close frame without FIN")
			}
			return p
		}
		t.Logf("frame op=%#x (%d bytes) before the close frame", op, len(p))
	}
}

// expectClose reads frames until a close frame, requires status code want
// and a valid UTF-8 reason, then requires the server to close the TCP
// connection (a clean FIN: read returns EOF) within ioWait.
func expectClose(t testing.TB, c net.Conn, want uint16) {
	t.Helper()
	p := expectCloseFrame(t, c)
	if len(p) < 2 {
		t.Fatalf("close frame body %x has no status code, want %d", p, want)
	}
	got := binary.BigEndian.Uint16(p)
	if got != want {
		t.Fatalf("close code %d (reason %q), want %d", got, p[2:], want)
	}
	if !utf8.Valid(p[2:]) {
		t.Fatalf("close reason %q is not valid UTF-8", p[2:])
	}
	expectEOF(t, c)
}

// expectEOF requires the server to close the connection within ioWait,
// without sending anything more.
func expectEOF(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	var buf [512]byte
	n, err := c.Read(buf[:])
	switch {
	case n > 0:
		t.Fatalf("server sent %d more bytes after its close: %q", n, buf[:n])
	case errors.Is(err, io.EOF):
	case isTimeout(err):
		t.Fatalf("server did not close the TCP connection within %v", ioWait)
	default:
		t.Fatalf("read after close: %v (want EOF from a clean FIN)", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// roomPath is the raw protocol's path for room name ("" is the lobby).
func roomPath(name string) string {
	if name == "" {
		return "/chat"
	}
	return "/chat/" + name
}

// dialPeer joins room name with gorilla, an independent client; it is
// closed when the test ends. The server adds it to the room a little after
// the 101: waitMembers waits for that.
func dialPeer(t testing.TB, s *Server, room string) *gorilla.Conn {
	t.Helper()
	g, _, err := gorilla.DefaultDialer.Dial(wsURL(s, roomPath(room)), nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// waitMembers waits until room name has n members. The server answers 101
// before it joins the room, so a test that sends right after a dial must
// wait for this, not for the handshake.
func waitMembers(t testing.TB, s *Server, room string, n int) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := 0
		if r := s.Hub().Room(rawRoomKey(room)); r != nil {
			got = r.Len()
		}
		if got != n {
			return fmt.Errorf("room %q has %d members, want %d", room, got, n)
		}
		return nil
	})
}

// expectMessage reads one message on g and compares type and bytes.
func expectMessage(t testing.TB, g *gorilla.Conn, wantType int, want []byte) {
	t.Helper()
	g.SetReadDeadline(time.Now().Add(ioWait))
	typ, got, err := g.ReadMessage()
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if typ != wantType || !bytes.Equal(got, want) {
		t.Fatalf("peer got type %d %q, want type %d %q", typ, trunc(got), wantType, trunc(want))
	}
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// protocolCase is a sequence of client bytes that must make the server
// fail the connection with code.
type protocolCase struct {
	name  string
	bytes []byte
	code  uint16
}

// runProtocolCases runs each case on its own connection to s, writing the
// bytes in one write and then expecting the close.
func runProtocolCases(t *testing.T, s *Server, cases []protocolCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawUpgrade(t, s, "/chat/violations")
			writeBytes(t, c, tc.bytes)
			expectClose(t, c, tc.code)
		})
	}
}

// TestRFCUnmaskedFrame: RFC 6455 5.1 "The server MUST close the connection
// upon receiving a frame that is not masked" (5.3: status 1002).
func TestRFCUnmaskedFrame(t *testing.T) {
	s := newTestServer(t, Config{})
	runProtocolCases(t, s, []protocolCase{
		{"text", testutil.Frame(true, 0, opText, false, []byte("hello")), 1002},
		{"binary", testutil.Frame(true, 0, opBinary, false, []byte{1, 2, 3}), 1002},
		{"ping", testutil.Frame(true, 0, opPing, false, []byte("p")), 1002},
		{"close", testutil.Frame(true, 0, opClose, false, testutil.CloseBody(1000, "")), 1002},
	})
}

// TestRFCReservedBits: RSV1-3 "MUST be 0 unless an extension is negotiated"
// (5.2); none is.
func TestRFCReservedBits(t *testing.T) {
	s := newTestServer(t, Config{})
	var cases []protocolCase
	for _, rsv := range []byte{1, 2, 4, 7} {
		cases = append(cases, protocolCase{fmt.Sprintf("rsv=%03b", rsv), testutil.Frame(true, rsv, opText, true, []byte("hi")), 1002})
	}
	cases = append(cases, protocolCase{"rsv1 on ping", testutil.Frame(true, 4, opPing, true, nil), 1002})
	runProtocolCases(t, s, cases)
}

// TestRFCReservedOpcodes: opcodes 0x3-0x7 and 0xB-0xF are reserved (5.2);
// "If an unknown opcode is received, the receiving endpoint MUST _Fail the
// WebSocket Connection_".
func TestRFCReservedOpcodes(t *testing.T) {
	s := newTestServer(t, Config{})
	var cases []protocolCase
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, protocolCase{fmt.Sprintf("op=%#x", op), testutil.Frame(true, 0, op, true, []byte("x")), 1002})
	}
	runProtocolCases(t, s, cases)
}

// TestRFCControlFrames: "All control frames MUST have a payload length of
// 125 bytes or less and MUST NOT be fragmented" (5.5).
func TestRFCControlFrames(t *testing.T) {
	s := newTestServer(t, Config{})
	big := bytes.Repeat([]byte("a"), 126)
	runProtocolCases(t, s, []protocolCase{
		{"fragmented ping", testutil.Frame(false, 0, opPing, true, []byte("p")), 1002},
		{"fragmented pong", testutil.Frame(false, 0, opPong, true, []byte("p")), 1002},
		{"fragmented close", testutil.Frame(false, 0, opClose, true, testutil.CloseBody(1000, "")), 1002},
		{"ping 126 bytes", testutil.Frame(true, 0, opPing, true, big), 1002},
		{"pong 126 bytes", testutil.Frame(true, 0, opPong, true, big), 1002},
		{"close 126 bytes", testutil.Frame(true, 0, opClose, true, testutil.CloseBody(1000, string(big[:124]))), 1002},
	})
}

// TestRFCFragmentationErrors: a continuation needs a message to continue,
// and a new data frame may not start inside a fragmented message (5.4).
func TestRFCFragmentationErrors(t *testing.T) {
	s := newTestServer(t, Config{})
	runProtocolCases(t, s, []protocolCase{
		{"continuation without start", testutil.Frame(true, 0, opCont, true, []byte("x")), 1002},
		{"non-final continuation without start", testutil.Frame(false, 0, opCont, true, []byte("x")), 1002},
		{"continuation after a complete message", testutil.Concat(
			testutil.Frame(true, 0, opText, true, []byte("done")),
			testutil.Frame(true, 0, opCont, true, []byte("x"))), 1002},
		{"text inside fragmented text", testutil.Concat(
			testutil.Frame(false, 0, opText, true, []byte("a")),
			testutil.Frame(true, 0, opText, true, []byte("b"))), 1002},
		{"binary inside fragmented text", testutil.Concat(
			testutil.Frame(false, 0, opText, true, []byte("a")),
			testutil.Frame(true, 0, opBinary, true, []byte("b"))), 1002},
		{"text inside fragmented binary", testutil.Concat(
			testutil.Frame(false, 0, opBinary, true, []byte("a")),
			testutil.Frame(false, 0, opCont, true, []byte("b")),
			testutil.Frame(true, 0, opText, true, []byte("c"))), 1002},
	})
}

// TestRFCInvalidUTF8: a text message that is not valid UTF-8 fails the
// connection with 1007 (8.1, 7.4.1), whether it came in one frame or in
// fragments.
func TestRFCInvalidUTF8(t *testing.T) {
	s := newTestServer(t, Config{})
	var cases []protocolCase
	for _, bad := range []string{
		"\xff",
		"abc\xc0\xafdef",       // overlong '/'
		"\xed\xa0\x80",         // UTF-16 surrogate
		"\xf4\x90\x80\x80",     // above U+10FFFF
		"\xce\xba\xe1\xbd",     // truncated at the end
		"ok \xe2\x82\x28 then", // bad continuation byte
	} {
		cases = append(cases, protocolCase{fmt.Sprintf("single frame %q", bad), testutil.Frame(true, 0, opText, true, []byte(bad)), 1007})
	}
	cases = append(cases,
		// "€" is E2 82 AC; each case splits a sequence between fragments.
		protocolCase{"split, bad continuation in the last fragment", testutil.Concat(
			testutil.Frame(false, 0, opText, true, []byte("a\xe2\x82")),
			testutil.Frame(true, 0, opCont, true, []byte("\x28b"))), 1007},
		protocolCase{"split, truncated at FIN", testutil.Concat(
			testutil.Frame(false, 0, opText, true, []byte("a\xe2")),
			testutil.Frame(true, 0, opCont, true, []byte("\x82"))), 1007},
		protocolCase{"split, bad byte in a middle fragment", testutil.Concat(
			testutil.Frame(false, 0, opText, true, []byte("a\xe2")),
			testutil.Frame(false, 0, opCont, true, []byte("\x82\xff")),
			testutil.Frame(true, 0, opCont, true, []byte("z"))), 1007},
	)
	runProtocolCases(t, s, cases)
}

// TestRFCUTF8SplitAcrossFragments: a multibyte character split between
// fragments is valid once joined and is delivered whole.
func TestRFCUTF8SplitAcrossFragments(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "utf8")
	c := rawUpgrade(t, s, "/chat/utf8")
	waitMembers(t, s, "utf8", 2)

	// "a€b𝄞c": € = E2 82 AC, 𝄞 = F0 9D 84 9E.
	writeBytes(t, c, testutil.Concat(
		testutil.Frame(false, 0, opText, true, []byte("a\xe2")),
		testutil.Frame(false, 0, opCont, true, []byte("\x82")),
		testutil.Frame(false, 0, opCont, true, []byte("\xacb\xf0\x9d")),
		testutil.Frame(false, 0, opCont, true, nil),
		testutil.Frame(true, 0, opCont, true, []byte("\x84\x9ec")),
	))
	expectMessage(t, peer, gorilla.TextMessage, []byte("a€b𝄞c"))
}

// TestRFCUTF8FailFast: RFC 6455 8.1 "When an endpoint is to interpret a
// byte stream as UTF-8 but finds that the byte stream is not, in fact, a
// valid UTF-8 stream, that endpoint MUST _Fail the WebSocket Connection_":
// the server must not wait for the rest of the message.
func TestRFCUTF8FailFast(t *testing.T) {
	s := newTestServer(t, Config{})
	t.Run("first fragment invalid, no FIN yet", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/failfast")
		writeFrame(t, c, false, 0, opText, true, []byte("ab\xffcd"))
		// The rest of the message never comes.
		expectClose(t, c, 1007)
	})
	t.Run("single frame, only its first bytes sent", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/failfast")
		payload := append([]byte("\xc0\xaf"), bytes.Repeat([]byte("x"), 998)...)
		f := testutil.Frame(true, 0, opText, true, payload)
		hdr := len(f) - len(payload) // 2 + 2 + 4
		writeBytes(t, c, f[:hdr+4])
		expectClose(t, c, 1007)
	})
	t.Run("valid prefix, invalid byte arrives later in the same frame", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/failfast")
		payload := append(bytes.Repeat([]byte("y"), 100), 0xff)
		payload = append(payload, bytes.Repeat([]byte("z"), 400)...)
		f := testutil.Frame(true, 0, opText, true, payload)
		hdr := len(f) - len(payload)
		writeBytes(t, c, f[:hdr+50])
		// Still valid so far: the connection must stay open.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, _, err := readFrame(c); !isTimeout(err) {
			t.Fatalf("server answered a valid partial frame: %v", err)
		}
		writeBytes(t, c, f[hdr+50:hdr+120])
		expectClose(t, c, 1007)
	})
}

// TestRFCMaxMessage: a message over Config.MaxMessage is refused with 1009
// (7.4.1 "a message that is too big for it to process"), as soon as a
// header announces it.
func TestRFCMaxMessage(t *testing.T) {
	s := newTestServer(t, Config{MaxMessage: 1024})
	t.Run("exactly the limit is delivered", func(t *testing.T) {
		peer := dialPeer(t, s, "limit")
		c := rawUpgrade(t, s, "/chat/limit")
		waitMembers(t, s, "limit", 2)
		msg := bytes.Repeat([]byte("m"), 1024)
		writeFrame(t, c, true, 0, opText, true, msg)
		expectMessage(t, peer, gorilla.TextMessage, msg)
		writeBytes(t, c, testutil.Concat(
			testutil.Frame(false, 0, opBinary, true, msg[:512]),
			testutil.Frame(true, 0, opCont, true, msg[512:])))
		expectMessage(t, peer, gorilla.BinaryMessage, msg)
	})
	t.Run("one frame, header only", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/limit-over")
		f := testutil.Frame(true, 0, opBinary, true, make([]byte, 2000))
		// Header (2 + 2 + mask 4) only: the payload is withheld, so the
		// server must decide from the announced length.
		writeBytes(t, c, f[:8])
		expectClose(t, c, 1009)
	})
	t.Run("one text frame one byte over", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/limit-over")
		f := testutil.Frame(true, 0, opText, true, bytes.Repeat([]byte("t"), 1025))
		writeBytes(t, c, f[:8])
		expectClose(t, c, 1009)
	})
	t.Run("fragments summing over the limit", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/limit-over")
		writeFrame(t, c, false, 0, opText, true, bytes.Repeat([]byte("a"), 600))
		writeFrame(t, c, false, 0, opCont, true, bytes.Repeat([]byte("b"), 400))
		// 1000 so far: still fine.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, _, err := readFrame(c); !isTimeout(err) {
			t.Fatalf("server answered a message still under the limit: %v", err)
		}
		f := testutil.Frame(true, 0, opCont, true, bytes.Repeat([]byte("c"), 25))
		writeBytes(t, c, f[:6]) // header of the fragment that crosses 1024
		expectClose(t, c, 1009)
	})
}

// TestRFCPingPong: "Upon receipt of a Ping frame, an endpoint MUST send a
// Pong frame in response ... with identical Application data" (5.5.2).
func TestRFCPingPong(t *testing.T) {
	s := newTestServer(t, Config{})
	c := rawUpgrade(t, s, "/chat/ping")
	for _, p := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0, 0xff, 0x80}, 42)[:125]} {
		writeFrame(t, c, true, 0, opPing, true, p)
		fin, op, got := mustReadFrame(t, c)
		if !fin || op != opPong || !bytes.Equal(got, p) {
			t.Fatalf("after ping %x: got fin=%v op=%#x %x, want a pong with the same payload", p, fin, op, got)
		}
	}
	// An unsolicited pong is ignored (5.5.3); the connection stays usable.
	writeFrame(t, c, true, 0, opPong, true, []byte("unsolicited"))
	writeFrame(t, c, true, 0, opPing, true, []byte("still here"))
	if _, op, got := mustReadFrame(t, c); op != opPong || string(got) != "still here" {
		t.Fatalf("got op=%#x %q, want pong \"still here\"", op, got)
	}
}

// TestRFCPingBetweenFragments: control frames "MAY be injected in the
// middle of a fragmented message" (5.4); the ping is answered and the
// message is still delivered whole.
func TestRFCPingBetweenFragments(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "frag-ping")
	c := rawUpgrade(t, s, "/chat/frag-ping")
	waitMembers(t, s, "frag-ping", 2)

	writeFrame(t, c, false, 0, opText, true, []byte("Hello, "))
	writeFrame(t, c, true, 0, opPing, true, []byte("mid"))
	fin, op, got := mustReadFrame(t, c)
	if !fin || op != opPong || string(got) != "mid" {
		t.Fatalf("got fin=%v op=%#x %q, want pong \"mid\"", fin, op, got)
	}
	writeFrame(t, c, false, 0, opCont, true, []byte("wor"))
	writeFrame(t, c, true, 0, opPong, true, []byte("stray pong"))
	writeFrame(t, c, true, 0, opCont, true, []byte("ld"))
	expectMessage(t, peer, gorilla.TextMessage, []byte("Hello, world"))
}

// TestRFCCloseHandshake: the server answers a client's close (5.5.1 "it
// MUST send a Close frame in response"), echoing the status code, then
// closes the TCP connection first (7.1.1).
func TestRFCCloseHandshake(t *testing.T) {
	s := newTestServer(t, Config{})
	t.Run("1000 bye", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/close")
		writeFrame(t, c, true, 0, opClose, true, testutil.CloseBody(1000, "bye"))
		expectClose(t, c, 1000)
	})
	t.Run("4001 echoed", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/close")
		writeFrame(t, c, true, 0, opClose, true, testutil.CloseBody(4001, "app reason"))
		expectClose(t, c, 4001)
	})
	t.Run("1001 echoed", func(t *testing.T) {
		c := rawUpgrade(t, s, "/chat/close")
		writeFrame(t, c, true, 0, opClose, true, testutil.CloseBody(1001, ""))
		expectClose(t, c, 1001)
	})
	t.Run("empty body", func(t *testing.T) {
		// RFC 6455 5.5.1 lets the reply have no body or echo a code; with
		// no code received (1005 internally) either an empty close or 1000
		// is correct.
		c := rawUpgrade(t, s, "/chat/close")
		writeFrame(t, c, true, 0, opClose, true, nil)
		p := expectCloseFrame(t, c)
		if len(p) != 0 && (len(p) < 2 || binary.BigEndian.Uint16(p) != 1000) {
			t.Fatalf("reply to an empty close has body %x, want empty or code 1000", p)
		}
		expectEOF(t, c)
	})
	t.Run("close after a message", func(t *testing.T) {
		peer := dialPeer(t, s, "close-msg")
		c := rawUpgrade(t, s, "/chat/close-msg")
		waitMembers(t, s, "close-msg", 2)
		writeBytes(t, c, testutil.Concat(
			testutil.Frame(true, 0, opText, true, []byte("last words")),
			testutil.Frame(true, 0, opClose, true, testutil.CloseBody(1000, ""))))
		expectClose(t, c, 1000)
		expectMessage(t, peer, gorilla.TextMessage, []byte("last words"))
	})
}

// TestRFCInvalidCloseCodes: codes that are reserved, unassigned or must
// never be sent on the wire (7.4.1, 7.4.2) are a protocol error.
func TestRFCInvalidCloseCodes(t *testing.T) {
	s := newTestServer(t, Config{})
	var cases []protocolCase
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, protocolCase{fmt.Sprintf("code=%d", code), testutil.Frame(true, 0, opClose, true, testutil.CloseBody(code, "")), 1002})
	}
	cases = append(cases,
		protocolCase{"one-byte body", testutil.Frame(true, 0, opClose, true, []byte{0x03}), 1002},
		protocolCase{"reason not UTF-8", testutil.Frame(true, 0, opClose, true, testutil.CloseBody(1000, "bad \xff reason")), 1007},
		protocolCase{"reason truncated UTF-8", testutil.Frame(true, 0, opClose, true, testutil.CloseBody(1000, "\xe2\x82")), 1007},
	)
	runProtocolCases(t, s, cases)
}

// TestRFCFragmentedBinaryDelivered: a binary message in three fragments
// reaches another member as one binary message.
func TestRFCFragmentedBinaryDelivered(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "frag-bin")
	c := rawUpgrade(t, s, "/chat/frag-bin")
	waitMembers(t, s, "frag-bin", 2)

	msg := make([]byte, 300)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	writeFrame(t, c, false, 0, opBinary, true, msg[:10])
	writeFrame(t, c, false, 0, opCont, true, msg[10:200])
	writeFrame(t, c, true, 0, opCont, true, msg[200:])
	expectMessage(t, peer, gorilla.BinaryMessage, msg)
}

// TestRFCExtendedLengths: 16-bit and 64-bit payload lengths (5.2).
func TestRFCExtendedLengths(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "lengths")
	c := rawUpgrade(t, s, "/chat/lengths")
	waitMembers(t, s, "lengths", 2)
	for _, n := range []int{125, 126, 65535, 65536} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		writeFrame(t, c, true, 0, opBinary, true, msg)
		expectMessage(t, peer, gorilla.BinaryMessage, msg)
	}
}

// TestRFCByteAtATime: the server reassembles frames split at every byte
// boundary, control frames in the middle of a fragmented message included.
func TestRFCByteAtATime(t *testing.T) {
	s := newTestServer(t, Config{})
	peer := dialPeer(t, s, "trickle")
	c := rawUpgrade(t, s, "/chat/trickle")
	waitMembers(t, s, "trickle", 2)
	if err := c.Conn.(*net.TCPConn).SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 100) // 200 bytes: a 16-bit length
	stream := testutil.Concat(
		testutil.Frame(true, 0, opText, true, []byte("one")),
		testutil.Frame(false, 0, opText, true, []byte(long[:101])), // splits an "é"
		testutil.Frame(true, 0, opPing, true, []byte("pp")),
		testutil.Frame(true, 0, opCont, true, []byte(long[101:])),
	)
	for i := range stream {
		writeBytes(t, c, stream[i:i+1])
	}
	expectMessage(t, peer, gorilla.TextMessage, []byte("one"))
	expectMessage(t, peer, gorilla.TextMessage, []byte(long))
	if _, op, got := mustReadFrame(t, c); op != opPong || string(got) != "pp" {
		t.Fatalf("got op=%#x %q, want pong \"pp\"", op, got)
	}
}

// TestRFCLength64MSB: "the most significant bit MUST be 0" in a 64-bit
// payload length (5.2).
func TestRFCLength64MSB(t *testing.T) {
	s := newTestServer(t, Config{})
	hdr := testutil.RawFrame(0x80|opBinary, true, 1<<63|5, nil)
	runProtocolCases(t, s, []protocolCase{{"msb set", hdr, 1002}})
}
