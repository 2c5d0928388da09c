package server

import (
	"bytes"
	"time"

	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// The close of a connection: one state machine (see the state constants
// in conn.go), from a queued close frame to the socket's teardown.

// closeLinger bounds each step of a close: how long the backlog queued
// ahead of a close frame may take before it is dropped (on shutdown,
// Config.DrainTimeout instead), how long the close frame then has to get
// into the kernel, and how long the peer has to answer it.
const closeLinger = 2 * time.Second

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
			c.outq[0] = head[:wsframe.FrameEnd(head, int(c.outOff))]
			keep = 1
		}
	}
	clear(c.outq[keep:])
	c.outq = c.outq[:keep]
	c.outBytes = 0
	if keep == 1 {
		c.outBytes = len(c.outq[0]) - int(c.outOff)
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

// Close implements pusher.Conn: start the close handshake with code.
func (c *Conn) Close(code int, reason string) {
	c.closeWith(ws.StatusCode(code), reason, ReasonProtocolClose)
}
