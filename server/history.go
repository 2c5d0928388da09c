package server

import (
	"errors"
	"net/url"
	"strconv"
	"time"

	"chatd/server/broker"
	"chatd/server/history"
	"chatd/server/pusher"
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// History (package history) on the engine's side: the store keeps the
// frames the rooms were sent, so a replay is those bytes written as they
// are (shared, never copied per joiner). A room's messages are appended
// and put into its fan-out under the store's lock, and a joiner is added
// to the room and queued its replay under it too: members receive a
// room's messages in position order, and a joiner gets each exactly once.
//
// What one joiner is replayed is bounded by half of Config.WriteQueue, so
// that a replay never makes its own reader a slow consumer: a raw
// ?history=N gets the newest of its N that fit, a Pusher recovery that
// does not fit gets chatd:recovery_failed (too_large).

// ErrBadHistory is a raw ?history= value that is not a whole number.
var errBadHistory = errors.New("history must be a whole number of messages from 0 up")

// newHistory makes the store when raw rooms or any Pusher app keep
// history; nil when none does (then history costs nothing).
func (s *Server) newHistory() {
	c := s.cfg
	if c.HistorySize > 0 {
		s.rawHist = history.Limits{Size: c.HistorySize, TTL: c.HistoryTTL}
	}
	need := s.rawHist.Size > 0
	if c.Apps != nil {
		for _, app := range c.Apps.List() {
			size := app.HistorySize
			if size == 0 {
				size = c.HistorySize
			}
			need = need || (size > 0 && app.HistoryTTL >= 0)
		}
	} else {
		need = need || c.HistorySize > 0
	}
	if !need {
		return
	}
	// In a cluster the store is this node's cache of the cluster's stream
	// (cluster_history.go): fed by Put, answering joins once ready.
	s.hist = history.New(history.Config{MaxBytes: c.HistoryMaxBytes, InUse: s.hub.inUse, SweepInterval: -1,
		Gated: len(c.Cluster.NATS) > 0})
}

// inUse reports whether room has members on this node (history.Config.InUse).
func (h *Hub) inUse(room string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[room] != nil
}

// rawHistory parses a raw route's query: the number of messages a joiner
// asks for with ?history=N (-1: not asked).
func rawHistory(query string) (int, error) {
	if query == "" {
		return -1, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil || !q.Has("history") {
		return -1, nil
	}
	n, err := strconv.ParseUint(q.Get("history"), 10, 31)
	if err != nil {
		return 0, errBadHistory
	}
	return int(n), nil
}

// replayBudget is how many bytes of history one joiner may be queued.
func (s *Server) replayBudget() int { return s.cfg.WriteQueue / 2 }

// joinRaw adds c to its raw room; with ?history=N, atomically with it, it
// queues the room's last N messages (those that fit the replay budget).
func (p *rawProto) joinRaw(c *Conn, rt route) {
	s := p.s
	switch {
	case s.hist == nil || s.rawHist.Size <= 0:
		c.room, _ = s.hub.join(rt.room, c, true)
	case s.kept != nil && !s.keeping():
		// No stream now: served as without history.
		c.room, _ = s.hub.join(rt.room, c, true)
	case s.kept != nil:
		req := history.Request{Last: max(rt.history, 0)}
		s.joinKept(rt.room, c, s.rawHist, req, true, func(r *Room, frames [][]byte, _ history.Position, _ error) {
			c.room = r
			s.replay(c, s.fitReplay(frames))
		})
	case rt.history <= 0:
		c.room, _ = s.hub.join(rt.room, c, true)
	default:
		s.hist.Join(rt.room, s.rawHist, history.Request{Last: rt.history}, func(frames [][]byte, _ history.Position, _ error) {
			c.room, _ = s.hub.join(rt.room, c, true)
			s.replay(c, s.fitReplay(frames))
		})
	}
}

// replay queues kept frames to c.
func (s *Server) replay(c *Conn, frames [][]byte) {
	if len(frames) > 0 {
		c.sendShared(frames...)
		s.stats.Replayed.Add(uint64(len(frames)))
	}
}

// leaveRaw takes c out of its raw room (under the store's lock when the
// room's history comes from the cluster's stream: rawProto.onClose).
func (p *rawProto) leaveRaw(c *Conn) { p.s.hub.Leave(c.room.name, c) }

// fitReplay keeps the newest frames that fit the replay budget.
func (s *Server) fitReplay(frames [][]byte) [][]byte {
	budget, i := s.replayBudget(), len(frames)
	for i > 0 && budget >= len(frames[i-1]) {
		budget -= len(frames[i-1])
		i--
	}
	return frames[i:]
}

// publishRaw is a raw member's message into its room: kept and put into
// the room's fan-out in one step when the room keeps history.
func (p *rawProto) publishRaw(c *Conn, op ws.OpCode, payload []byte) (mustFlush bool) {
	s := p.s
	switch {
	case s.hist == nil || s.rawHist.Size <= 0:
	case s.keeping():
		// Delivered here too, from the stream, in its order.
		s.kept.nats.KeptPublish(c.room.name, c.room.joinNumber(c), false, byte(op), payload)
		if s.kept.nats.KeptInFlight() > inFlightHigh {
			s.holdForStream(c.room)
		}
		return false
	case s.away():
		// Members here now; the other nodes and the history when NATS is
		// back (the stream then skips it here).
		s.kept.nats.KeptPublish(c.room.name, 0, true, byte(op), payload)
		return c.room.publish(op, payload, c)
	case s.kept != nil:
		// The stream cannot be had (JetStream missing): core NATS below.
	default:
		s.hist.Append(c.room.name, s.rawHist, func(history.Position) []byte {
			return wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(payload))+len(payload)), op, payload)
		}, func(frame []byte) {
			mustFlush = c.room.publishFrame(frame, c)
		})
		return mustFlush
	}
	s.broker.Publish(c.room.name, byte(op), payload)
	return c.room.publish(op, payload, c)
}

// The pusher.HistoryRooms side of pusherRooms.

func (pr pusherRooms) PublishKept(room string, lim history.Limits, encode func(history.Position) []byte, except pusher.Conn, exceptID string) (stored func() error) {
	h := pr.h
	s := h.s
	ex, _ := except.(*Conn)
	if s.kept != nil {
		msg := encode(history.Position{})
		if len(exceptID) > 255 {
			exceptID = ""
		}
		if s.keeping() || s.away() {
			away := s.away()
			f := s.kept.nats.KeptPublish(room, 0, away, opPusher, []byte{byte(len(exceptID))}, []byte(exceptID), msg)
			if away {
				h.Publish(room, ws.OpText, msg, ex)
				return nil
			}
			return func() error { return broker.WaitStored(f, storeWait) }
		}
		// No stream: as without history, over core NATS.
		h.Publish(room, ws.OpText, msg, ex)
		pusherCluster{s.kept.nats}.Publish(room, msg, exceptID)
		return nil
	}
	s.hist.Append(room, lim, func(pos history.Position) []byte {
		msg := encode(pos)
		return wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(msg))+len(msg)), ws.OpText, msg)
	}, func(frame []byte) {
		if r := h.Room(room); r != nil && r.publishFrame(frame, ex) {
			r.flushLater()
		}
	})
	return nil
}

// storeWait bounds how long an HTTP API event waits for the cluster's
// history stream to store it.
const storeWait = 5 * time.Second

func (pr pusherRooms) SubscribeFrom(room string, pc pusher.Conn, lim history.Limits, req history.Request, first func(history.Position, error) [][]byte) {
	h := pr.h
	s := h.s
	c := pc.(*Conn)
	answer := func(frames [][]byte, at history.Position, err error) {
		if err == nil {
			size := 0
			for _, f := range frames {
				size += len(f)
			}
			if size > s.replayBudget() {
				err, frames = pusher.ErrReplayTooLarge, nil
			}
		}
		for _, m := range first(at, err) {
			c.Send(m)
		}
		s.replay(c, frames)
	}
	switch {
	case s.kept != nil && s.keeping():
		s.joinKept(room, c, lim, req, false, func(_ *Room, frames [][]byte, at history.Position, err error) {
			answer(frames, at, err)
		})
	case s.kept != nil:
		h.Join(room, c)
		var err error
		if req.Since != nil {
			err = history.ErrUnavailable
			if s.kept.down.Load() {
				err = history.ErrOff
			}
		}
		answer(nil, history.Position{}, err)
	default:
		s.hist.Join(room, lim, req, func(frames [][]byte, at history.Position, err error) {
			h.Join(room, c)
			answer(frames, at, err)
		})
	}
}

func (pr pusherRooms) History(room string, lim history.Limits, n int) ([][]byte, history.Position) {
	s := pr.h.s
	if s.kept != nil {
		return s.kept.last(room, n)
	}
	frames, at := s.hist.Last(room, lim, n)
	for i, f := range frames {
		frames[i] = framePayload(f)
	}
	return frames, at
}

// framePayload returns the payload of an unmasked server frame.
func framePayload(f []byte) []byte {
	switch n := f[1] & 0x7f; n {
	case 126:
		return f[4:]
	case 127:
		return f[10:]
	default:
		return f[2:]
	}
}
