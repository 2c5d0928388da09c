package server

import (
	"errors"
	"sync"
	"sync/atomic"

	"chatd/poller"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// Connection states. A connection only moves forward through them; every
// change after stateOpen is made under Conn.wmu (the state is also read
// without it, by the read path and the timer). From stateClosing on
// nothing more is queued, and the close reason is recorded.
const (
	stateHandshake uint32 = iota // the HTTP request head is being read
	stateOpen                    // a WebSocket
	stateClosing                 // a close frame (or HTTP answer) is queued behind the backlog
	stateCut                     // closing; the backlog ahead of the close frame was dropped
	stateFinal                   // the socket is to be closed now, by the connection's own callback
	stateClosed                  // the socket is closed, or handed to net/http
)

// Conn is one client connection: first an HTTP handshake in progress, then
// a WebSocket. At rest it is this struct and nothing else: no goroutine, no
// timer, no read buffer (see wsframe.Decoder), no write buffer; the poller
// keeps one pointer to its Desc (embedded here), and a raw room one pointer
// and a join number. Conn is per connection, so its size matters: 224 bytes
// (a size class of Go's allocator; TestConnSize keeps it there). Fields are
// grouped by size, not by topic, so that none pads; each says which side
// touches it.
type Conn struct {
	srv *Server
	// d is the connection's registration with the poller (Register).
	d poller.Desc

	// Set by the handshake, read-only afterwards.
	proto  connProtocol
	pusher *pusherState // Pusher connections only

	// Read side: touched only from the Desc's callbacks.
	hbuf *[]byte
	dec  wsframe.Decoder

	// Raw protocol: the one room this connection is in (roomPos below
	// says where in its members).
	room *Room

	// ip is this connection's count among its client address's
	// (Config.MaxConnsPerIP), given back when it closes; nil when off.
	ip *ipCount

	// Wheel links, guarded by wheel.mu (with wdue and wslot below).
	wnext, wprev *Conn

	// Write side, guarded by wmu (with outOff, outBytes and reason below).
	wmu  sync.Mutex
	outq [][]byte // whole frames waiting; entries may be shared

	// Timer side.
	lastRead atomic.Int64 // wheel tick of the last byte read
	deadline atomic.Int64 // handshake or linger deadline (ticks)
	// pingAt: in the open state the tick of the last ping sent (wheel
	// goroutine only); before it, when the handshake began (Server.since,
	// for the handshake histogram; read side only).
	pingAt   int64
	wdue     int64 // wheel: the tick this connection's check is due
	outBytes int   // bytes in outq not yet written

	state atomic.Uint32
	// rlTokens and rlAt are the raw protocol's message rate limit
	// (Config.MaxMessageRate): the token bucket in thousandths of a
	// message, and the millisecond (Server.since, mod 2^32) it was last
	// filled. Read side only.
	rlTokens uint32
	rlAt     uint32
	cong     atomic.Uint32 // raw: the member's congestion state (Room.congest)
	// outOff: bytes of outq[0] already written. An entry is one frame (at
	// most MaxMessage and a header) or one room batch, far below 2 GiB.
	outOff int32
	wslot  int32 // wheel: 1 + the slot it is linked in; 0: not on the wheel
	// roomPos is 1 + this member's index in room.members (0: in no raw
	// room), guarded by room.mu: raw rooms keep no index map (Room.index).
	roomPos int32

	reason     CloseReason
	publish    publishState // raw: what this read published to room
	peerClosed bool         // read side: the peer sent close or hung up
	shutWr     bool         // read side: we sent FIN
}

// connProtocol is what runs on an upgraded connection (raw chat or Pusher).
// Calls come from the connection's Desc callbacks, one at a time.
type connProtocol interface {
	// onOpen starts the protocol on a connection routed to it by rt.
	onOpen(c *Conn, rt route)
	onMessage(c *Conn, op ws.OpCode, payload []byte)
	onClose(c *Conn)
	// shutdownCode is sent to every connection on graceful shutdown.
	shutdownCode() ws.StatusCode
	// slowConsumerCode closes a member whose write queue overflowed.
	slowConsumerCode() ws.StatusCode
	// timeouts returns after how many wheel ticks of silence c is pinged,
	// and after how many it is closed (idleClose).
	timeouts(c *Conn) (ping, idle int64)
	ping(c *Conn)
	idleClose(c *Conn)
}

// pollHandler and frameHandler give Conn the poller's and the decoder's
// callback sets without putting them in Conn's exported API.
type (
	pollHandler  Conn
	frameHandler Conn
)

// ---- poller callbacks (one at a time per connection) ----

func (h *pollHandler) OnData(_ *poller.Worker, p []byte) {
	c := (*Conn)(h)
	c.lastRead.Store(c.srv.wheel.now.Load())
	switch c.state.Load() {
	case stateHandshake:
		c.handshakeData(p)
	case stateOpen, stateClosing, stateCut, stateFinal:
		if c.proto == nil {
			return // a refused handshake: ignore whatever else comes
		}
		c.feed(p)
	}
}

// feed decodes bytes of an open connection and starts the fan-out of what
// they published.
func (c *Conn) feed(p []byte) {
	// The room is taken first: a close frame in the same read may finalize
	// the connection (and leave the room) before the fan-out starts.
	room := c.room
	err := c.dec.Feed(p, (*frameHandler)(c))
	if pub := c.publish; pub != publishedNone {
		c.publish = publishedNone
		if pub == publishedMustFlush {
			room.flush()
		}
		// Backpressure: while the room cannot deliver at this pace, this
		// producer is not read again (Room.holdBack).
		room.holdBack(c)
	}
	if err != nil {
		c.protocolError(err)
	}
}

func (h *pollHandler) OnWritable(*poller.Worker) { (*Conn)(h).flush() }

// OnWake: a close was requested, a closing connection's timer wants its
// queue tried again (EPOLLOUT only comes once a large part of a full
// socket buffer is free), or an adopted connection has a request to parse.
func (h *pollHandler) OnWake(*poller.Worker) {
	c := (*Conn)(h)
	c.flush()
	if c.state.Load() == stateHandshake && c.hbuf != nil && len(*c.hbuf) > 0 {
		// An adopted connection's request (Server.adopt); for one whose head
		// is still incomplete this finds nothing new.
		c.parseHead(0)
	}
}

func (h *pollHandler) OnHangup(_ *poller.Worker, err error) {
	c := (*Conn)(h)
	c.peerClosed = true
	if pe, ok := err.(*poller.PanicError); ok {
		c.srv.logLimited("connection handler panicked; closing it with 1011", "panic", pe.Value, "stack", string(pe.Stack))
		c.srv.stats.Panics.Add(1)
		if c.state.Load() == stateHandshake {
			c.finalize(ReasonPanic)
			return
		}
		c.closeWith(ws.StatusInternalServerError, "internal error", ReasonPanic)
		c.maybeFinish()
		return
	}
	reason := ReasonPeerHangup
	c.wmu.Lock()
	if c.closingLocked() {
		reason = c.reason
	}
	c.wmu.Unlock()
	c.finalize(reason)
}

// ---- decoder callbacks ----

func (h *frameHandler) OnMessage(op ws.OpCode, payload []byte) {
	c := (*Conn)(h)
	if c.state.Load() != stateOpen {
		return // RFC 6455 1.4: after sending close, data is discarded.
	}
	c.proto.onMessage(c, op, payload)
}

func (h *frameHandler) OnPing(payload []byte) {
	c := (*Conn)(h)
	// RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send
	// a Pong frame in response ... with identical Application data".
	c.sendOwned(wsframe.AppendFrame(make([]byte, 0, 2+len(payload)), ws.OpPong, payload))
}

func (h *frameHandler) OnPong([]byte) {}

func (h *frameHandler) OnClose(code ws.StatusCode, _ []byte) {
	c := (*Conn)(h)
	c.peerClosed = true
	// RFC 6455 5.5.1: the endpoint "MUST send a Close frame in response",
	// typically echoing the status code it received.
	c.closeWith(code, "", ReasonPeerClosed)
	c.maybeFinish()
}

// protocolError closes the connection for a peer's protocol violation.
func (c *Conn) protocolError(err error) {
	var ce *wsframe.ProtocolError
	if !errors.As(err, &ce) {
		ce = &wsframe.ProtocolError{Code: ws.StatusProtocolError, Reason: "protocol error"}
	}
	reason := ReasonProtocolError
	switch ce.Code {
	case ws.StatusMessageTooBig:
		reason = ReasonTooBig
	case ws.StatusInvalidFramePayloadData:
		reason = ReasonBadUTF8
	}
	// Nothing the peer sends after a violation can be trusted: stop parsing
	// and close once our close frame is out.
	c.dec.Stop()
	c.peerClosed = true
	c.closeWith(ce.Code, ce.Reason, reason)
	c.maybeFinish()
}

// ---- write path ----
