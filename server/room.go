package server

import (
	"sync"
	"sync/atomic"
	"time"

	"chatd/poller"
	"chatd/server/broker"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// fanoutChunk is how many members one fan-out job serves. Rooms up to this
// size are served inline by the publishing worker.
const fanoutChunk = 512

// fanoutSample: one fan-out batch in this many has its time measured
// (chatd_fanout_seconds).
const fanoutSample = 8

// Hub is the registry of rooms, keyed by name.
type Hub struct {
	s     *Server
	mu    sync.Mutex
	rooms map[string]*Room
}

// Room is a set of connections that receive each other's messages.
//
// Publishing appends the framed message to the room's pending batch. If no
// fan-out is running, the publisher starts one; otherwise the running
// fan-out picks the batch up when it finishes. A busy room therefore sends
// every member all the messages that arrived during the previous fan-out in
// one write: the cost per delivery falls as load rises, instead of one
// syscall per message per member.
type Room struct {
	hub  *Hub
	name string

	mu      sync.Mutex
	members []*Conn
	joined  []uint64 // joined[i]: the join sequence number of members[i]
	// Where each member sits in members. A raw connection is in one room
	// only, so a raw (paced) room keeps the position in the member itself
	// (Conn.roomPos) and has no index; a Pusher connection may be in many
	// channels, and its channels' rooms map it. The map costs some 30
	// bytes per member, which a raw room of 19,000 idle members saves.
	index    map[*Conn]int32
	seq      uint64 // counts joins; a message is for members who joined by then
	pending  *batch
	batches  uint32 // batches begun, for sampling the fan-out time (fanoutSample)
	flushing bool
	flushJob func(*poller.Worker) // flush, as a pool job made once (flushLater)

	// Backpressure (paced rooms: raw chat, where every message comes from
	// a member's socket that can be read more slowly).
	paced      bool
	congested  []congestedMember // members producers wait for
	waiters    []*Conn           // producers held back
	stallTimer *time.Timer
	stallArmed bool

	// Backpressure across nodes (a cluster): a raw room's producers on
	// one node wait for its members on the others too.
	remoteFed atomic.Bool        // other nodes publish into this room: tell them when it is behind
	signalled bool               // this node told the others the room is behind here
	signalAt  time.Time          // when it last said so
	remote    []remoteCongestion // nodes where the room is behind: producers here wait for them
	// feedBehind: this node's feed of the room from the cluster's history
	// stream lags it (setFeedBehind): producers wait. streamHeld: the
	// stream has not confirmed many of this node's messages yet
	// (holdForStream): producers wait.
	feedBehind bool
	streamHeld bool
}

// remoteCongestion: the room is behind on node, as that node said, until
// it says otherwise or until (broker.CongestionTTL after it last said so:
// a node that died or lost NATS must not hold producers back for good).
type remoteCongestion struct {
	node  string
	until time.Time
}

// Backpressure. A producer is not read again while its room cannot deliver
// at its pace: while a member that reads is behind (its queue is past half
// of Config.WriteQueue) or the room's next batch is already large. TCP flow
// control then slows the producer down, the way nats-server stalls a fast
// producer, so members that keep up are never closed because of someone
// else's speed. A member that is still behind after maxStall is no longer
// waited for: it has fallen behind the room's own pace, its queue grows,
// and past Config.WriteQueue it is closed as a slow consumer.
//
// While members are listed, their queues are retried every stallProbe: a
// full socket buffer takes bytes again as soon as the peer reads, but
// EPOLLOUT waits until a large part of it is free, which for a socket
// buffer the kernel grew to megabytes can take longer than maxStall.
const (
	maxStall         = 500 * time.Millisecond
	stallProbe       = 10 * time.Millisecond
	pendingHighWater = 64 << 10
)

// Conn.cong values.
const (
	congNone    uint32 = iota
	congListed         // in Room.congested: producers wait for it
	congExcused        // was behind for maxStall: nobody waits for it
)

type congestedMember struct {
	c     *Conn
	since time.Time
}

// publishState is what one read of a raw connection published.
type publishState uint8

const (
	publishedNone      publishState = iota
	publishedJoined                 // added to a fan-out already running
	publishedMustFlush              // this read must run the room's fan-out
)

func newHub(s *Server) *Hub {
	return &Hub{s: s, rooms: make(map[string]*Room)}
}

// Join adds c to room name, creating the room. Idempotent. first reports
// whether c is the room's first member on this node (interest in the room
// begins).
func (h *Hub) Join(name string, c *Conn) (r *Room, first bool) { return h.join(name, c, false) }

// join is Join; a room it creates with paced holds producers back
// (backpressure) when its members fall behind.
func (h *Hub) join(name string, c *Conn, paced bool) (r *Room, first bool) {
	h.mu.Lock()
	r = h.rooms[name]
	if r == nil {
		r = &Room{hub: h, name: name, paced: paced}
		if !paced {
			r.index = make(map[*Conn]int32)
		}
		r.flushJob = func(*poller.Worker) { r.flush() }
		h.rooms[name] = r
	}
	r.mu.Lock()
	if _, ok := r.position(c); !ok {
		r.seq++
		r.setPosition(c, int32(len(r.members)))
		r.members = append(r.members, c)
		r.joined = append(r.joined, r.seq)
		first = len(r.members) == 1
	}
	r.mu.Unlock()
	h.mu.Unlock()
	if first {
		// The cluster's interest hook: this node now wants the room's
		// messages from other nodes.
		h.s.broker.Interest(name, true)
	}
	return r, first
}

// position returns where c sits in r.members, if it is a member. r.mu held.
func (r *Room) position(c *Conn) (int32, bool) {
	if r.index != nil {
		i, ok := r.index[c]
		return i, ok
	}
	if c.roomPos == 0 {
		return 0, false
	}
	return c.roomPos - 1, true
}

// setPosition records that c sits at members[i]. r.mu held.
func (r *Room) setPosition(c *Conn, i int32) {
	if r.index != nil {
		r.index[c] = i
		return
	}
	c.roomPos = i + 1
}

// clearPosition forgets c, which left. r.mu held.
func (r *Room) clearPosition(c *Conn) {
	if r.index != nil {
		delete(r.index, c)
		return
	}
	c.roomPos = 0
}

// Leave removes c from room name; an empty room is dropped. Idempotent.
// last reports whether c was the room's last member on this node
// (interest in the room ends).
func (h *Hub) Leave(name string, c *Conn) (last bool) {
	h.mu.Lock()
	if r := h.rooms[name]; r != nil {
		r.mu.Lock()
		if i, ok := r.position(c); ok {
			end := len(r.members) - 1
			moved := r.members[end]
			r.members[i] = moved
			r.joined[i] = r.joined[end]
			r.setPosition(moved, i)
			r.members[end] = nil
			r.members = r.members[:end]
			r.joined = r.joined[:end]
			r.clearPosition(c)
			last = len(r.members) == 0
		}
		empty := len(r.members) == 0
		r.mu.Unlock()
		if empty {
			delete(h.rooms, name)
		}
		h.mu.Unlock()
		if last {
			h.s.broker.Interest(name, false)
		}
		return last
	}
	h.mu.Unlock()
	return false
}

// Publish sends a message to the members of room name on this node but
// except (nil: all). The fan-out runs on the pool, so the caller (an HTTP
// API request, a Pusher client event under its app's lock) waits for
// nothing, and messages published while a fan-out runs share its next
// write to each member. This is the one way into a room from outside it;
// the raw protocol, whose messages come from a member's own read, uses the
// same two steps (Room.publish, then Room.flush once per read) inline.
func (h *Hub) Publish(name string, op ws.OpCode, payload []byte, except *Conn) {
	if r := h.Room(name); r != nil && r.publish(op, payload, except) {
		r.flushLater()
	}
}

// Room returns the room called name, or nil.
func (h *Hub) Room(name string) *Room {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[name]
}

// Len returns the number of members.
func (r *Room) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// publish adds a message to the pending batch. It reports whether the
// caller must call flush: nobody else is delivering. A reader that
// publishes several messages from one read calls flush once after the last,
// so a burst goes to each member in one write.
func (r *Room) publish(op ws.OpCode, payload []byte, except *Conn) (mustFlush bool) {
	return r.add(nil, op, payload, except)
}

// publishFrame is publish for a message already framed (a kept one).
func (r *Room) publishFrame(frame []byte, except *Conn) (mustFlush bool) {
	return r.add(frame, 0, nil, except)
}

// add is publish (frame nil) or publishFrame.
func (r *Room) add(frame []byte, op ws.OpCode, payload []byte, except *Conn) (mustFlush bool) {
	r.mu.Lock()
	b := r.pending
	if b == nil {
		b = getBatch()
		// The fan-out time is measured for one batch in fanoutSample
		// (the first of a room among them): two clock reads and a
		// histogram observation would be ~5% of a one-member batch.
		b.start = 0
		if r.batches%fanoutSample == 0 {
			b.start = r.hub.s.since()
		}
		r.batches++
		r.pending = b
	}
	start := len(b.buf)
	if n := len(b.marks); n == 0 || b.marks[n-1].seq != r.seq {
		b.marks = append(b.marks, seqMark{off: start, seq: r.seq})
	}
	if frame != nil {
		b.buf = append(b.buf, frame...)
	} else {
		b.buf = wsframe.AppendFrame(b.buf, op, payload)
	}
	if except != nil {
		b.addSender(except, start, len(b.buf))
	}
	if r.flushing {
		r.mu.Unlock()
		return false
	}
	r.flushing = true
	r.mu.Unlock()
	return true
}

// flushLater runs flush on the pool.
func (r *Room) flushLater() { r.hub.s.poller.Submit(r.flushJob) }

// flush delivers pending batches until there are none. Small rooms are
// served inline; large ones are split into jobs on the worker pool, and the
// job that finishes last carries on with the next batch, so batches of one
// room never overlap (every member sees messages in order).
func (r *Room) flush() {
	p := r.hub.s.poller
	for {
		r.mu.Lock()
		b := r.pending
		if b == nil {
			r.flushing = false
			r.mu.Unlock()
			return
		}
		r.pending = nil
		b.members = append(b.members[:0], r.members...)
		b.joined = append(b.joined[:0], r.joined...)
		if len(r.waiters) > 0 && !r.blockedLocked() {
			r.releaseLocked() // the batch they waited on is under way
		}
		r.mu.Unlock()

		n := len(b.members)
		s := r.hub.s
		if n <= fanoutChunk {
			r.congest(b.deliver(s, 0, n))
			s.observeFanout(b.start, n)
			putBatch(b)
			continue
		}
		chunks := (n + fanoutChunk - 1) / fanoutChunk
		b.left.Store(int32(chunks))
		for lo := fanoutChunk; lo < n; lo += fanoutChunk {
			hi := min(lo+fanoutChunk, n)
			p.Submit(func(*poller.Worker) {
				r.congest(b.deliver(s, lo, hi))
				if b.left.Add(-1) == 0 {
					s.observeFanout(b.start, n)
					putBatch(b)
					r.flush()
				}
			})
		}
		r.congest(b.deliver(s, 0, fanoutChunk))
		if b.left.Add(-1) != 0 {
			return // the last chunk job continues the loop
		}
		s.observeFanout(b.start, n)
		putBatch(b)
	}
}

// holdBack stops reading producer c while the room cannot keep its pace:
// a member is behind, or a fan-out runs with a large batch already waiting.
// It reads again when that is over (releaseLocked).
func (r *Room) holdBack(c *Conn) {
	if !r.paced {
		return
	}
	r.mu.Lock()
	if r.blockedLocked() || (r.flushing && r.pending != nil && len(r.pending.buf) > pendingHighWater) {
		r.waiters = append(r.waiters, c)
		c.d.PauseRead()
	}
	r.mu.Unlock()
}

// blockedLocked reports whether producers wait: a member is behind, here
// or on another node. r.mu held.
func (r *Room) blockedLocked() bool {
	return len(r.congested) > 0 || len(r.remote) > 0 || r.feedBehind || r.streamHeld
}

// setFeedBehind records that this node's feed of the room from the
// cluster's history stream lags (cluster_history.go): producers wait.
func (r *Room) setFeedBehind(on bool) {
	r.mu.Lock()
	r.feedBehind = on
	if !on && !r.blockedLocked() {
		r.releaseLocked()
	}
	r.mu.Unlock()
}

func (r *Room) releaseLocked() {
	for i, c := range r.waiters {
		c.d.ResumeRead()
		r.waiters[i] = nil
	}
	r.waiters = r.waiters[:0]
}

// congest lists members found behind by a delivery: producers wait for
// them from now on, for maxStall at most.
func (r *Room) congest(behind []*Conn) {
	if len(behind) == 0 || !r.paced {
		return
	}
	now := time.Now()
	r.mu.Lock()
	for _, m := range behind {
		if !m.cong.CompareAndSwap(congNone, congListed) {
			continue
		}
		// The member may have caught up since the delivery, before it could
		// see itself listed (Conn.flush): then it must not be listed.
		m.wmu.Lock()
		caughtUp := len(m.outq) == 0 || m.state.Load() == stateClosed
		m.wmu.Unlock()
		if caughtUp {
			m.cong.Store(congNone)
			continue
		}
		r.congested = append(r.congested, congestedMember{m, now})
	}
	if len(r.congested) > 0 && !r.stallArmed {
		r.armStallLocked(stallProbe)
	}
	signal := len(r.congested) > 0 && !r.signalled && r.remoteFed.Load()
	if signal {
		r.signalled, r.signalAt = true, now
	}
	r.mu.Unlock()
	if signal {
		r.hub.s.broker.Congested(r.name, true)
	}
}

func (r *Room) armStallLocked(d time.Duration) {
	r.stallArmed = true
	if r.stallTimer == nil {
		r.stallTimer = time.AfterFunc(d, r.stallCheck)
	} else {
		r.stallTimer.Reset(d)
	}
}

// drained is called by a member whose queue emptied while it was listed
// or excused.
func (r *Room) drained(c *Conn) {
	if c.cong.CompareAndSwap(congExcused, congNone) || r == nil {
		return
	}
	r.mu.Lock()
	off := r.recheckLocked(time.Time{})
	r.mu.Unlock()
	if off {
		r.hub.s.broker.Congested(r.name, false)
	}
}

// recheckLocked drops listed members that caught up (or closed) and, with
// a non-zero now, excuses those behind for maxStall; when nobody is left
// to wait for, the producers read again. off reports that the other nodes
// must be told the room caught up here (broker.Congested, after r.mu).
func (r *Room) recheckLocked(now time.Time) (off bool) {
	kept := r.congested[:0]
	for _, e := range r.congested {
		e.c.wmu.Lock()
		caughtUp := len(e.c.outq) == 0 || e.c.state.Load() == stateClosed
		e.c.wmu.Unlock()
		switch {
		case caughtUp:
			e.c.cong.CompareAndSwap(congListed, congNone)
		case !now.IsZero() && now.Sub(e.since) >= maxStall:
			e.c.cong.CompareAndSwap(congListed, congExcused)
		default:
			kept = append(kept, e)
		}
	}
	clear(r.congested[len(kept):])
	r.congested = kept
	if len(r.congested) == 0 {
		off, r.signalled = r.signalled, false
	}
	if !now.IsZero() && len(r.remote) > 0 {
		live := r.remote[:0]
		for _, e := range r.remote {
			if now.Before(e.until) {
				live = append(live, e)
			}
		}
		clear(r.remote[len(live):])
		r.remote = live
	}
	if !r.blockedLocked() {
		r.releaseLocked()
	}
	return off
}

// remoteCongested records that the room is behind on another node (on) or
// caught up there: producers here wait for it as for a member of their own
// node that is behind.
func (r *Room) remoteCongested(node string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for i < len(r.remote) && r.remote[i].node != node {
		i++
	}
	switch {
	case on && i < len(r.remote):
		r.remote[i].until = time.Now().Add(broker.CongestionTTL)
	case on:
		r.remote = append(r.remote, remoteCongestion{node, time.Now().Add(broker.CongestionTTL)})
		if !r.stallArmed {
			r.armStallLocked(stallProbe) // expires it if the node falls silent
		}
	case i < len(r.remote):
		r.remote = append(r.remote[:i], r.remote[i+1:]...)
		if !r.blockedLocked() {
			r.releaseLocked()
		}
	}
}

// RemoteCongestion is the cluster broker's Congestion: another node says a
// room is behind there, or caught up.
func (h *Hub) RemoteCongestion(room, node string, on bool) {
	if r := h.Room(room); r != nil && r.paced {
		r.remoteCongested(node, on)
	}
}

// PublishRemote is Publish of a message from another node: the room then
// tells the other nodes when it falls behind here (Room.congest).
func (h *Hub) PublishRemote(name string, op ws.OpCode, payload []byte) {
	r := h.Room(name)
	if r == nil {
		return
	}
	if !r.paced {
		if r.publish(op, payload, nil) {
			r.flushLater()
		}
		return
	}
	if !r.remoteFed.Load() {
		r.remoteFed.Store(true)
	}
	if r.publish(op, payload, nil) {
		r.flushLater()
	}
}

// stallCheck runs on a timer goroutine every stallProbe while members are
// listed: it excuses those behind for maxStall and has the others' queues
// retried (Conn.flush, which reports back through drained).
func (r *Room) stallCheck() {
	r.mu.Lock()
	r.stallArmed = false
	now := time.Now()
	off := r.recheckLocked(now)
	for _, e := range r.congested {
		e.c.d.Wake()
	}
	if r.blockedLocked() {
		r.armStallLocked(stallProbe)
	}
	// Still behind: say so again before the other nodes stop believing it.
	again := r.signalled && now.Sub(r.signalAt) >= broker.CongestionRefresh
	if again {
		r.signalAt = now
	}
	r.mu.Unlock()
	if off || again {
		r.hub.s.broker.Congested(r.name, again)
	}
}

// batch is the frames published to a room while the previous fan-out ran,
// back to back in one buffer, with who sent which (to skip the sender).
type batch struct {
	buf      []byte
	senders  []senderRange
	marks    []seqMark // where the room's join count changed within buf
	members  []*Conn
	joined   []uint64
	left     atomic.Int32
	retained atomic.Bool // some member queued a reference to buf
	start    int64       // Server.since when its first message was published
}

type senderRange struct {
	c        *Conn
	from, to int
}

// seqMark: frames from off on were published when the room had seen seq
// joins. A member that joined later than a frame was published does not get
// it, even if the fan-out's member snapshot (taken later) includes it.
type seqMark struct {
	off int
	seq uint64
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch() *batch { return batchPool.Get().(*batch) }

func putBatch(b *batch) {
	if b.retained.Load() || cap(b.buf) > 1<<20 {
		b.buf = nil // members still reference it; let the GC have it
	}
	b.buf = b.buf[:0]
	clear(b.senders)
	b.senders = b.senders[:0]
	clear(b.members)
	if cap(b.members) > 1<<16 {
		b.members, b.joined = nil, nil
	}
	b.members = b.members[:0]
	b.joined = b.joined[:0]
	b.marks = b.marks[:0]
	b.retained.Store(false)
	batchPool.Put(b)
}

func (b *batch) addSender(c *Conn, from, to int) {
	if n := len(b.senders); n > 0 && b.senders[n-1].c == c && b.senders[n-1].to == from {
		b.senders[n-1].to = to
		return
	}
	b.senders = append(b.senders, senderRange{c: c, from: from, to: to})
}

// deliver writes the batch to members[lo:hi] and returns the members it
// found behind (see Room.congest). It allocates nothing per member unless a
// member's socket is full and its queue must grow; the rare member that
// sent some of the frames or joined after some were published gets the
// rest as a vector. The deliveries are counted in s.stats once per call.
func (b *batch) deliver(s *Server, lo, hi int) (behind []*Conn) {
	retained := false
	sent := 0
	first := b.marks[0].seq
	for i, m := range b.members[lo:hi] {
		joined := b.joined[lo+i]
		var kept, late bool
		if joined > first || (len(b.senders) != 0 && b.sentBy(m)) {
			segs := b.visible(m, joined)
			if len(segs) == 0 {
				continue
			}
			kept, late = m.sendShared(segs...)
		} else {
			kept, late = m.sendShared(b.buf)
		}
		sent++
		retained = retained || kept
		if late {
			behind = append(behind, m)
		}
	}
	if retained {
		b.retained.Store(true)
	}
	s.stats.Deliveries.Add(uint64(sent))
	return behind
}

func (b *batch) sentBy(c *Conn) bool {
	for i := range b.senders {
		if b.senders[i].c == c {
			return true
		}
	}
	return false
}

// visible returns the parts of the batch c should get: the frames published
// after it joined, minus the frames it sent itself (a member never gets its
// own message back).
func (b *batch) visible(c *Conn, joined uint64) [][]byte {
	start := len(b.buf)
	for _, mk := range b.marks {
		if mk.seq >= joined {
			start = mk.off
			break
		}
	}
	var segs [][]byte
	at := start
	for _, s := range b.senders {
		if s.c != c || s.to <= at {
			continue
		}
		if s.from > at {
			segs = append(segs, b.buf[at:s.from])
		}
		at = s.to
	}
	if at < len(b.buf) {
		segs = append(segs, b.buf[at:])
	}
	return segs
}
