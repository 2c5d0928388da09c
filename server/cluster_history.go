package server

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"chatd/server/broker"
	"chatd/server/history"
	"chatd/server/pusher"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// History in a cluster (broker.EnableHistory): rooms that keep history are
// carried by the cluster's JetStream stream, and this node's history store
// (Gated) is the cache of the rooms it has members in, fed in the
// stream's order with the stream's positions. A message of such a room is
// published to the stream only; this node delivers it, like every other
// node, when its consumer of the room hands it over (HistoryMessage), so
// all members everywhere get a room's messages in the stream's order.
//
// A room's cache is ready once its consumer has handed over every message
// kept when it started (HistoryReady); a joiner that asks for history
// before that waits (history.Store.Join answers it from Ready), already a
// member of the room so that the consumer runs; nothing is delivered live
// before Ready. Joins and leaves of such rooms run under the store's lock
// (Store.Do), so that a waiting joiner that left meanwhile is not joined.
//
// While the stream is unusable (JetStream missing), rooms are served as
// without history: core NATS, no positions (keptUp false).

// clusterKept is the engine's state of cluster history.
type clusterKept struct {
	nats *broker.NATS
	// down: the stream could not be established (JetStream missing, or
	// NATS refused it); until then, and while connecting, rooms that keep
	// history go through the stream (joins wait for it).
	down atomic.Bool
	why  atomic.Pointer[string] // why it is down
}

// keeping reports whether rooms that keep history go through the stream
// now (it is established and NATS is there).
func (s *Server) keeping() bool {
	return s.kept != nil && !s.kept.down.Load() && s.kept.nats.KeptUsable()
}

// away reports whether this node keeps history through the stream but
// cannot reach it right now (NATS is away): its members are served at
// once, and what they send is published for the stream when NATS is back.
func (s *Server) away() bool {
	return s.kept != nil && !s.kept.down.Load() && !s.kept.nats.KeptUsable()
}

// keptLimits returns room's history limits (Size 0: it keeps none).
func (s *Server) keptLimits(room string) history.Limits {
	if strings.HasPrefix(room, "chat/") {
		return s.rawHist
	}
	return s.pusher.RoomHistory(room)
}

// enableClusterHistory starts the stream on b when this node keeps history.
func (s *Server) enableClusterHistory(b *broker.NATS) {
	if s.hist == nil {
		return
	}
	s.kept = &clusterKept{nats: b}
	b.EnableHistory(broker.HistoryConfig{
		Size: s.cfg.HistorySize, TTL: s.cfg.HistoryTTL, MaxBytes: s.cfg.HistoryMaxBytes,
		Replicas: s.cfg.HistoryReplicas,
		Keeps:    func(room string) bool { return s.keptLimits(room).Size > 0 },
		Handler:  keptHandler{s},
	})
}

// keptHandler is the broker's history handler.
type keptHandler struct{ s *Server }

func (k keptHandler) HistoryUp(up bool, reason string) {
	k.s.kept.why.Store(&reason)
	k.s.kept.down.Store(!up)
	if !up {
		// Served without history until the stream is back: nobody waits.
		k.s.hist.ReleasePending(history.ErrOff)
	}
}

// HistoryGap: this node's feed of room skipped messages its members will
// never get from it. They are closed as slow consumers (1008 / Pusher
// 4100), so that they reconnect and recover (on a node that has what they
// missed) or are told chatd:recovery_failed: a gap made visible, never a
// silent one.
func (k keptHandler) HistoryGap(room string, missed uint64) {
	s := k.s
	s.log.Warn("history: this node's feed of a room fell behind the stream and lost messages; closing its members there so that they recover", "room", room, "missed", missed)
	// Its cache has the hole too: positions from before it are too old
	// here (another node may still honour them).
	s.hist.Clear(room)
	r := s.hub.Room(room)
	if r == nil {
		return
	}
	r.mu.Lock()
	members := append([]*Conn(nil), r.members...)
	r.mu.Unlock()
	for _, c := range members {
		c.wmu.Lock()
		if c.mayQueueLocked() {
			c.slowConsumerLocked()
		}
		c.wmu.Unlock()
	}
}

// HistoryBehind: this node's feed of room lags the stream (or caught up):
// the room's producers here wait as for a member behind, and the other
// nodes are told, so theirs wait too (Room.congest's signal).
func (k keptHandler) HistoryBehind(room string, on bool) {
	if r := k.s.hub.Room(room); r != nil {
		r.setFeedBehind(on)
	}
	k.s.broker.Congested(room, on)
}

// HistoryStopped: Interest ended, which for a room that keeps history
// happens under the store's lock (leaveKept, rawProto.onClose, joinKept).
func (k keptHandler) HistoryStopped(room string) { k.s.hist.UnreadyLocked(room) }

func (k keptHandler) HistoryWaitingSince(room string) int64 { return k.s.hist.WaitingSince(room) }

func (k keptHandler) HistoryReady(room, epoch string, seq uint64) {
	k.s.hist.Ready(room, history.Position{Epoch: epoch, Offset: seq})
}

func (k keptHandler) HistoryMessage(room, epoch string, seq uint64, stamp int64, node string, member uint64, marker, local bool, payload []byte, warm bool) {
	s := k.s
	lim := s.keptLimits(room)
	if lim.Size <= 0 {
		return
	}
	pos := history.Position{Epoch: epoch, Offset: seq}
	var frame []byte
	exceptID := ""
	if !marker {
		op, body := payload[0], payload[1:]
		if op == opPusher {
			if len(body) < 1 || len(body) < 1+int(body[0]) {
				return
			}
			n := 1 + int(body[0])
			exceptID = string(body[1:n])
			msg := pusher.WithPosition(body[n:], pos)
			frame = wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(msg))+len(msg)), ws.OpText, msg)
		} else {
			frame = wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(body))+len(body)), ws.OpCode(op), body)
		}
	}
	mine := node == s.kept.nats.UniqueID()
	s.hist.Put(room, lim, pos, stamp, frame, func(f []byte) {
		if warm || (local && mine) {
			return // nobody's, or delivered here when it was sent
		}
		r := s.hub.Room(room)
		if r == nil {
			return
		}
		var ex *Conn
		switch {
		case exceptID != "":
			ex, _ = s.pusher.ConnOf(room, exceptID).(*Conn)
		case member != 0 && mine:
			ex = r.memberByJoin(member)
		}
		if r.paced && !mine && !r.remoteFed.Load() {
			// Fed by other nodes: it tells them when it falls behind here
			// (Room.congest), as on the core NATS path (Hub.PublishRemote).
			r.remoteFed.Store(true)
		}
		if r.publishFrame(f, ex) {
			r.flushLater()
		}
	})
}

// Producers of rooms carried by the stream are read more slowly while the
// stream has more than inFlightHigh of this node's messages unconfirmed,
// until fewer than inFlightLow are: chatd reads a flooding client far
// faster than JetStream stores, and what it has read is past holding back.
const (
	inFlightHigh = 2000
	inFlightLow  = 500
)

// holdForStream holds r's producers back while too many of this node's
// messages wait for the stream (after a publish found more than
// inFlightHigh): one goroutine per held room watches them drain.
func (s *Server) holdForStream(r *Room) {
	r.mu.Lock()
	if r.streamHeld {
		r.mu.Unlock()
		return
	}
	r.streamHeld = true
	r.mu.Unlock()
	go func() {
		for s.kept.nats.KeptInFlight() > inFlightLow {
			time.Sleep(2 * time.Millisecond)
		}
		r.mu.Lock()
		r.streamHeld = false
		if !r.blockedLocked() {
			r.releaseLocked()
		}
		r.mu.Unlock()
	}()
}

// memberByJoin returns the member that joined with number seq, or nil.
func (r *Room) memberByJoin(seq uint64) *Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, j := range r.joined {
		if j == seq {
			return r.members[i]
		}
	}
	return nil
}

// joinNumber returns c's join number in r (0: not a member).
func (r *Room) joinNumber(c *Conn) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.position(c); ok {
		return r.joined[i]
	}
	return 0
}

// leaveKept is Hub.Leave for a room whose history comes from the stream:
// under the store's lock, for HistoryStopped.
func (s *Server) leaveKept(room string, c *Conn) {
	s.hist.Do(func() { s.hub.Leave(room, c) })
}

// joinKept joins c to room and hands join the replay req asks for (now,
// or once the room's cache is ready); join is not called for a connection
// that closed meanwhile. A joiner that waits is not yet a member (it must
// not get live messages before its replay), but holds the room's
// interest, so that this node follows the room; a raw one is not read
// meanwhile (its messages need its room). It returns the room if c joined
// at once.
func (s *Server) joinKept(room string, c *Conn, lim history.Limits, req history.Request, paced bool, join func(r *Room, frames [][]byte, at history.Position, err error)) *Room {
	var now *Room
	answered, held := false, false // under the store's lock
	s.hist.Join(room, lim, req, func(frames [][]byte, at history.Position, err error) {
		answered = true
		if c.state.Load() != stateClosed {
			r, _ := s.hub.join(room, c, paced)
			join(r, frames, at, err)
		}
		if held {
			s.broker.Interest(room, false)
			if paced {
				c.d.ResumeRead()
			}
		}
	})
	s.hist.Do(func() {
		if !answered {
			held = true
			s.broker.Interest(room, true)
			if paced {
				c.d.PauseRead()
			}
			return
		}
		if c.state.Load() != stateClosed {
			now = s.hub.Room(room)
		}
	})
	return now
}

// historyReason is /readyz's word on cluster history ("" when fine).
func (s *Server) historyReason() string {
	if s.kept == nil || !s.kept.down.Load() {
		return ""
	}
	if w := s.kept.why.Load(); w != nil {
		return *w
	}
	return "history stream not established"
}

// last reads room's newest n events from the stream for the HTTP API
// (Pusher rooms: each with its position), and the room's position.
func (k *clusterKept) last(room string, n int) ([][]byte, history.Position) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, epoch, last, err := k.nats.KeptLast(ctx, room, n)
	if err != nil {
		return nil, history.Position{}
	}
	var out [][]byte
	for _, m := range msgs {
		op, body := m.Payload[0], m.Payload[1:]
		if op != opPusher || len(body) < 1 || len(body) < 1+int(body[0]) {
			continue
		}
		out = append(out, pusher.WithPosition(body[1+int(body[0]):], history.Position{Epoch: epoch, Offset: m.Seq}))
	}
	return out, history.Position{Epoch: epoch, Offset: last}
}
