package server

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"time"

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

// closeLinger bounds each step of a close: how long the backlog queued
// ahead of a close frame may take before it is dropped (on shutdown,
// Config.DrainTimeout instead), how long the close frame then has to get
// into the kernel, and how long the peer has to answer it.
const closeLinger = 2 * time.Second

// Conn is one client connection: first an HTTP handshake in progress, then
// a WebSocket. At rest it is this struct and nothing else: no goroutine, no
// timer, no read buffer (see wsframe.Decoder), no write buffer.
type Conn struct {
	srv   *Server
	d     *poller.Desc
	state atomic.Uint32

	// Set by the handshake, read-only afterwards.
	proto  connProtocol
	pusher *pusherState // Pusher connections only

	// Read side: touched only from the Desc's callbacks.
	hbuf       *[]byte
	dec        wsframe.Decoder
	peerClosed bool // the peer sent close or hung up
	shutWr     bool // we sent FIN

	// Timer side.
	lastRead atomic.Int64 // wheel tick of the last byte read
	deadline atomic.Int64 // handshake or linger deadline (ticks)
	pingAt   int64        // wheel goroutine only

	// Write side, guarded by wmu.
	wmu      sync.Mutex
	outq     [][]byte // whole frames waiting; entries may be shared
	outOff   int      // bytes of outq[0] already written
	outBytes int      // bytes in outq not yet written
	reason   CloseReason

	// Raw protocol: the one room this connection is in, what this read
	// published to it, and the member's congestion state (Room.congest).
	room    *Room
	publish publishState
	cong    atomic.Uint32

	// Wheel links, guarded by wheel.mu.
	wnext, wprev *Conn
	wdue         int64
	wslot        int32
	inWheel      bool
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

// flush writes what the queue holds, as far as the socket takes it, then
// lets a closing connection go on with its close.
func (c *Conn) flush() {
	c.wmu.Lock()
	if c.state.Load() != stateClosed && len(c.outq) > 0 {
		c.flushLocked()
	}
	drained := len(c.outq) == 0
	c.wmu.Unlock()
	if drained && c.cong.Load() != congNone {
		c.room.drained(c)
	}
	c.maybeFinish()
}

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
	var pe *poller.PanicError
	if errors.As(err, &pe) {
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
	var ce *wsframe.CloseError
	if !errors.As(err, &ce) {
		ce = &wsframe.CloseError{Code: ws.StatusProtocolError, Reason: "protocol error"}
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

// sendOwned queues or writes one frame built for this connection only.
func (c *Conn) sendOwned(frame []byte) {
	c.wmu.Lock()
	if c.mayQueueLocked() {
		c.writeLocked(frame)
	}
	c.wmu.Unlock()
}

// sendShared delivers bytes of a shared fan-out batch. It reports whether
// the bytes were queued (so the batch buffer must not be reused), and
// whether the queue is now past half of Config.WriteQueue (the member is
// falling behind: Room.congest).
func (c *Conn) sendShared(bufs ...[]byte) (retained, behind bool) {
	c.wmu.Lock()
	if c.mayQueueLocked() {
		retained = c.writeLocked(bufs...)
		behind = retained && c.outBytes > c.srv.cfg.WriteQueue/2 && c.mayQueueLocked()
	}
	c.wmu.Unlock()
	return retained, behind
}

// writeLocked writes bufs after whatever is queued. Bytes the kernel does
// not take are queued by reference; the caller must not modify them. It
// reports whether anything was queued.
func (c *Conn) writeLocked(bufs ...[]byte) (queued bool) {
	if len(c.outq) == 0 {
		var n int
		var err error
		if len(bufs) == 1 {
			n, err = c.d.Write(bufs[0])
		} else {
			n, err = c.d.Writev(bufs)
		}
		if err != nil {
			c.writeFailedLocked()
			return false
		}
		for len(bufs) > 0 && n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return false
		}
		// The entry is queued whole and the written part skipped by outOff,
		// so that a close can still find where the frame in flight ends.
		c.outOff = n
		c.outBytes -= n
	}
	for _, b := range bufs {
		if len(b) > 0 {
			c.outq = append(c.outq, b)
			c.outBytes += len(b)
		}
	}
	if c.outBytes > c.srv.cfg.WriteQueue && c.mayQueueLocked() {
		c.slowConsumerLocked()
	}
	return true
}

// flushLocked writes queued bytes with writev until the kernel stops taking
// them. Everything queued for a member goes out in as few syscalls as the
// socket allows: this is where a backlog of small frames is coalesced.
func (c *Conn) flushLocked() {
	for len(c.outq) > 0 {
		batch := c.outq
		if len(batch) > poller.MaxIovecs {
			batch = batch[:poller.MaxIovecs]
		}
		head := batch[0]
		batch[0] = head[c.outOff:]
		want := 0
		for _, b := range batch {
			want += len(b)
		}
		n, err := c.d.Writev(batch)
		batch[0] = head
		if err != nil {
			c.writeFailedLocked()
			return
		}
		full := n < want
		c.outBytes -= n
		n += c.outOff
		i := 0
		for i < len(c.outq) && n >= len(c.outq[i]) {
			n -= len(c.outq[i])
			c.outq[i] = nil
			i++
		}
		c.outOff = n
		c.outq = c.outq[i:]
		if full {
			break // the socket is full again; EPOLLOUT will call back
		}
	}
	if len(c.outq) == 0 {
		c.outq = nil // drop the backing array: an idle conn holds no buffer
		c.outBytes, c.outOff = 0, 0
	}
}

func (c *Conn) writeFailedLocked() {
	c.outq, c.outBytes, c.outOff = nil, 0, 0
	c.requestFinalLocked(ReasonWriteError)
}

// slowConsumerLocked closes a member whose queue passed the limit: its
// backlog is dropped but for the rest of the frame in flight, and the 1008
// close frame goes right behind it, so the member learns why even though
// the kernel still holds what it was sent before. Nobody else waits for it.
func (c *Conn) slowConsumerLocked() {
	c.srv.stats.SlowConsumers.Add(1)
	c.cutBacklogLocked(false)
	c.queueCloseLocked(c.proto.slowConsumerCode(), "slow consumer", ReasonSlowConsumer, c.srv.wheel.ticks(closeLinger))
	c.state.Store(stateCut)
}

// cutBacklogLocked drops the queue but for the rest of the frame in flight
// (a peer cannot resynchronise in the middle of a frame), a handshake
// response not yet written in full and, with keepLast, the last entry (the
// close frame already queued).
func (c *Conn) cutBacklogLocked(keepLast bool) {
	var last []byte
	if keepLast {
		if len(c.outq) <= 1 {
			return
		}
		last = c.outq[len(c.outq)-1]
		c.outq = c.outq[:len(c.outq)-1]
	}
	keep := 0
	if len(c.outq) > 0 {
		head := c.outq[0]
		switch {
		case bytes.HasPrefix(head, []byte("HTTP/")):
			// Server frames never start with 'H' (it would set RSV1).
			keep = 1
		case c.outOff > 0:
			c.outq[0] = head[:wsframe.FrameEnd(head, c.outOff)]
			keep = 1
		}
	}
	clear(c.outq[keep:])
	c.outq = c.outq[:keep]
	c.outBytes = 0
	if keep == 1 {
		c.outBytes = len(c.outq[0]) - c.outOff
	} else {
		c.outOff = 0
	}
	if last != nil {
		c.outq = append(c.outq, last)
		c.outBytes += len(last)
	}
}

// closeWith starts the close handshake with code (0: an empty close body)
// behind what is queued. Safe from any goroutine; idempotent.
func (c *Conn) closeWith(code ws.StatusCode, reason string, why CloseReason) {
	c.closeWithin(code, reason, why, c.srv.wheel.ticks(closeLinger))
}

// closeWithin is closeWith with the time (ticks) the backlog ahead of the
// close frame may take; past it the backlog is dropped (closingTimer).
func (c *Conn) closeWithin(code ws.StatusCode, reason string, why CloseReason, ticks int64) {
	c.wmu.Lock()
	if c.mayQueueLocked() {
		c.queueCloseLocked(code, reason, why, ticks)
	}
	c.wmu.Unlock()
}

func (c *Conn) queueCloseLocked(code ws.StatusCode, reason string, why CloseReason, ticks int64) {
	frame := wsframe.AppendClose(nil, code, reason)
	c.outq = append(c.outq, frame)
	c.outBytes += len(frame)
	if len(c.outq) == 1 {
		c.flushLocked()
	}
	c.startClosingLocked(why, ticks)
	c.d.Wake()
}

// rejectHTTP sends an HTTP response (a refused handshake) and closes.
func (c *Conn) rejectHTTP(resp []byte, why CloseReason) {
	c.wmu.Lock()
	if c.mayQueueLocked() {
		c.writeLocked(resp)
		c.startClosingLocked(why, c.srv.wheel.ticks(closeLinger))
	}
	c.wmu.Unlock()
	c.maybeFinish()
}

// startClosingLocked marks that nothing more will be queued after what is
// queued now, and arms the deadline of the first step of the close.
func (c *Conn) startClosingLocked(why CloseReason, ticks int64) {
	c.reason = why
	c.state.Store(stateClosing)
	at := c.srv.wheel.now.Load() + ticks
	c.deadline.Store(at)
	c.srv.wheel.schedule(c, at)
	// A producer held back reads again: unread bytes at close would turn
	// into an RST that could destroy the close frame in flight.
	c.d.ResumeRead()
}

// closingTimer runs on the wheel goroutine for a closing connection. Until
// the deadline it retries a queue the kernel has not taken (EPOLLOUT may
// not come for a long time on a full socket buffer). At the deadline a
// backlog still ahead of the close frame is dropped, and the frame gets
// closeLinger more; past that, or once the frame is out, the socket is
// closed.
func (c *Conn) closingTimer(now int64) {
	c.wmu.Lock()
	pending := len(c.outq) > 0
	if now < c.deadline.Load() {
		c.wmu.Unlock()
		if pending {
			c.d.Wake()
			c.srv.wheel.schedule(c, now+1)
		} else {
			c.srv.wheel.schedule(c, c.deadline.Load())
		}
		return
	}
	if pending && c.state.Load() == stateClosing && c.proto != nil {
		c.cutBacklogLocked(true)
		c.state.Store(stateCut)
		at := now + c.srv.wheel.ticks(closeLinger)
		c.deadline.Store(at)
		c.wmu.Unlock()
		c.d.Wake()
		c.srv.wheel.schedule(c, now+1)
		return
	}
	c.requestFinalLocked(ReasonLinger)
	c.wmu.Unlock()
}

// hurryClose drops the backlog ahead of a queued close frame now (Shutdown,
// once the drain timeout is over).
func (c *Conn) hurryClose() {
	c.wmu.Lock()
	if c.state.Load() == stateClosing && c.proto != nil && len(c.outq) > 1 {
		c.cutBacklogLocked(true)
		c.state.Store(stateCut)
		c.d.Wake()
	}
	c.wmu.Unlock()
}

// requestFinal asks the connection's own callback to close the socket now.
// Safe from any goroutine.
func (c *Conn) requestFinal(why CloseReason) {
	c.wmu.Lock()
	c.requestFinalLocked(why)
	c.wmu.Unlock()
}

func (c *Conn) requestFinalLocked(why CloseReason) {
	st := c.state.Load()
	if st >= stateFinal {
		return
	}
	if st < stateClosing {
		c.reason = why
	}
	c.state.Store(stateFinal)
	c.d.Wake()
}

// mayQueueLocked reports whether output may still be queued: not once a
// close frame or a final HTTP answer is.
func (c *Conn) mayQueueLocked() bool { return c.state.Load() < stateClosing }

// closingLocked reports whether a close has begun (and c.reason is set).
func (c *Conn) closingLocked() bool { return c.state.Load() >= stateClosing }

// maybeFinish runs in the Desc's callbacks: once the close frame is out it
// half-closes the socket, and once the peer is done too it closes it.
func (c *Conn) maybeFinish() {
	c.wmu.Lock()
	st, drained, why := c.state.Load(), len(c.outq) == 0, c.reason
	c.wmu.Unlock()
	switch {
	case st == stateClosed:
		return
	case st == stateFinal:
		c.finalize(why)
		return
	case st < stateClosing || !drained:
		return
	}
	if !c.shutWr {
		// The close frame is out: the peer has closeLinger to answer it,
		// however long the backlog ahead of it was allowed to take.
		if at := c.srv.wheel.now.Load() + c.srv.wheel.ticks(closeLinger); at < c.deadline.Load() {
			c.deadline.Store(at)
			c.srv.wheel.schedule(c, at)
		}
		// RFC 6455 7.1.1: the server should close the TCP connection first
		// once the close handshake is done; FIN now, close on the peer's FIN
		// (or after closeLinger) so unread bytes never turn into an RST that
		// could destroy our close frame in flight.
		c.shutWr = true
		_ = c.d.Shutdown()
	}
	if c.peerClosed {
		c.finalize(why)
	}
}

// finalize closes the socket and forgets the connection, for reason why.
// It runs in the Desc's callbacks only.
func (c *Conn) finalize(why CloseReason) {
	if c.teardown() {
		_ = c.d.Close()
		c.srv.connClosed(c, why)
	}
}

// teardown is the one end of every connection, closed or handed to
// net/http: it marks it closed (under wmu, so no writer touches the socket
// afterwards), drops its queue, timer, room memberships and buffers. It
// reports false if that was done before. The caller then closes or
// detaches the socket.
func (c *Conn) teardown() bool {
	c.wmu.Lock()
	if c.state.Load() == stateClosed {
		c.wmu.Unlock()
		return false
	}
	c.state.Store(stateClosed)
	c.outq, c.outBytes, c.outOff = nil, 0, 0
	c.wmu.Unlock()
	c.srv.wheel.remove(c)
	if c.proto != nil {
		c.proto.onClose(c)
	}
	c.dec.Release()
	c.releaseHandshakeBuf()
	return true
}
