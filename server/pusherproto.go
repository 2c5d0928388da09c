package server

import (
	"net/url"

	"chatd/server/history"
	"chatd/server/pusher"

	"github.com/gobwas/ws"
)

// pusherProto runs the Pusher Channels protocol (package pusher) on
// /app/{key} connections, on the same engine as the raw protocol: the
// package's channels are Hub rooms, so channel fan-out is the same
// encode-once, chunked fan-out.
type pusherProto struct {
	s *Server
	p *pusher.Protocol
}

// pusherState is a Pusher connection's Conn.pusher.
type pusherState struct {
	appKey  string // from the path /app/{key}
	query   string
	session *pusher.Session
}

func (pp *pusherProto) onOpen(c *Conn, _ route) {
	st := c.pusher
	q, _ := url.ParseQuery(st.query)
	st.session = pp.p.Open(c, st.appKey, q)
	if st.session != nil {
		// The app decides how big an event may be: an app allowing more
		// than the engine's MaxMessage gets room for its events (and
		// pusher:error, not 1009, for an event over its max_event_bytes);
		// the engine's MaxMessage stays the floor, so an app with small
		// events does not turn what -max-message allows into closes. Safe
		// here: onOpen runs on the connection's worker before any frame
		// is decoded.
		c.dec.MaxMessage = int32(min(max(pp.s.cfg.MaxMessage, st.session.MaxMessageBytes()), MaxMaxMessage))
	}
}

func (pp *pusherProto) onMessage(c *Conn, op ws.OpCode, payload []byte) {
	st := c.pusher
	if st.session == nil {
		return
	}
	pp.s.stats.MessagesIn.Add(1)
	if op != ws.OpText {
		return // the protocol is JSON text; binary frames mean nothing here
	}
	st.session.Message(payload)
}

func (pp *pusherProto) onClose(c *Conn) {
	if st := c.pusher; st.session != nil {
		st.session.Closed()
	}
}

// Pusher close codes: 4200 "reconnect" on shutdown, 4100 "over capacity /
// back off" for a member too slow to keep up, 4201 when pings go unanswered.
func (pp *pusherProto) shutdownCode() ws.StatusCode { return pusher.CodeReconnect }

func (pp *pusherProto) slowConsumerCode() ws.StatusCode { return pusher.CodeOverCapacity }

// timeouts: the client was told activity_timeout in connection_established;
// a connection silent that long gets pusher:ping, and pusher.PongTimeout
// later it is closed with 4201.
func (pp *pusherProto) timeouts(c *Conn) (ping, idle int64) {
	st := c.pusher
	if st.session == nil {
		return pp.s.pingTicks, pp.s.idleTicks
	}
	a := st.session.ActivityTimeout()
	return pp.s.wheel.ticks(a), pp.s.wheel.ticks(a + pusher.PongTimeout)
}

func (pp *pusherProto) ping(c *Conn) {
	if st := c.pusher; st.session != nil {
		st.session.Ping()
		return
	}
	c.sendOwned(pingFrame)
}

func (pp *pusherProto) idleClose(c *Conn) {
	c.closeWith(pusher.CodePongTimeout, "Pong reply not received", ReasonIdle)
}

// pusherRooms gives package pusher the hub's rooms (pusher.Rooms).
type pusherRooms struct{ h *Hub }

func (pr pusherRooms) Subscribe(room string, c pusher.Conn) {
	if s := pr.h.s; s.keeping() && s.keptLimits(room).Size > 0 {
		// A channel carried by the cluster's history stream (presence and
		// user channels subscribe here): a member at once, since the
		// protocol's own events (member_added...) reach members directly;
		// a join with nothing to replay marks when it came, so that the
		// room's feed goes live from then (cluster_history.go).
		s.hist.Do(func() { pr.h.Join(room, c.(*Conn)) })
		s.hist.Join(room, s.keptLimits(room), history.Request{}, func([][]byte, history.Position, error) {})
		return
	}
	pr.h.Join(room, c.(*Conn))
}

func (pr pusherRooms) Unsubscribe(room string, c pusher.Conn) {
	if s := pr.h.s; s.kept != nil && s.keptLimits(room).Size > 0 {
		s.leaveKept(room, c.(*Conn))
		return
	}
	pr.h.Leave(room, c.(*Conn))
}

func (pr pusherRooms) Publish(room string, msg []byte, except pusher.Conn) {
	ex, _ := except.(*Conn)
	pr.h.Publish(room, ws.OpText, msg, ex)
}
