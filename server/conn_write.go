package server

import (
	"chatd/poller"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// The write path of a connection: direct writes, the bounded queue of
// shared frames, writev flushes.

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
	if len(c.outq) == 0 && len(bufs) > poller.MaxIovecs {
		// More than one writev takes (a history replay): queue them all
		// and write the queue until the socket is full, not just the first
		// writev's worth, which would leave the rest queued with no
		// EPOLLOUT to come for it.
		for _, b := range bufs {
			if len(b) > 0 {
				c.outq = append(c.outq, b)
				c.outBytes += len(b)
			}
		}
		c.flushLocked()
		if len(c.outq) == 0 {
			return false
		}
		if c.outBytes > c.srv.cfg.WriteQueue && c.mayQueueLocked() {
			c.slowConsumerLocked()
		}
		return true
	}
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
		c.outOff = int32(n)
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
		n += int(c.outOff)
		i := 0
		for i < len(c.outq) && n >= len(c.outq[i]) {
			n -= len(c.outq[i])
			c.outq[i] = nil
			i++
		}
		c.outOff = int32(n)
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

// Send implements pusher.Conn: one text frame for this connection.
func (c *Conn) Send(msg []byte) {
	c.sendOwned(wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(msg))+len(msg)), ws.OpText, msg))
}
