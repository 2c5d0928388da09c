package server

import (
	"net/url"

	"chatd/poller"
	"chatd/server/pusher"
	"chatd/server/wsframe"

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

// pusherState is a Pusher connection's Conn.ext.
type pusherState struct {
	query   string
	session *pusher.Session
}

func (pp *pusherProto) onOpen(c *Conn) {
	st := c.ext.(*pusherState)
	q, _ := url.ParseQuery(st.query)
	st.session = pp.p.Open(c, c.target, q)
	if st.session != nil {
		// The app decides how big an event may be: an app allowing more
		// than the engine's MaxMessage gets room for its events (and
		// pusher:error, not 1009, for an event over its max_event_bytes);
		// the engine's MaxMessage stays the floor, so an app with small
		// events does not turn what -max-message allows into closes. Safe
		// here: onOpen runs on the connection's worker before any frame
		// is decoded.
		c.dec.MaxMessage = max(pp.s.cfg.MaxMessage, st.session.MaxMessageBytes())
	}
}

func (pp *pusherProto) onMessage(c *Conn, op ws.OpCode, payload []byte) {
	st := c.ext.(*pusherState)
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
	if st := c.ext.(*pusherState); st.session != nil {
		st.session.Closed()
	}
}

// Pusher close codes: 4200 "reconnect" on shutdown, 4100 "over capacity /
// back off" for a member too slow to keep up, 4201 when pings go unanswered.
func (pp *pusherProto) shutdownCode() ws.StatusCode     { return pusher.CodeReconnect }
func (pp *pusherProto) slowConsumerCode() ws.StatusCode { return pusher.CodeOverCapacity }

// timeouts: the client was told activity_timeout in connection_established;
// a connection silent that long gets pusher:ping, and pusher.PongTimeout
// later it is closed with 4201.
func (pp *pusherProto) timeouts(c *Conn) (ping, idle int64) {
	st := c.ext.(*pusherState)
	if st.session == nil {
		return pp.s.pingTicks, pp.s.idleTicks
	}
	a := st.session.ActivityTimeout()
	return pp.s.wheel.ticks(a), pp.s.wheel.ticks(a + pusher.PongTimeout)
}

func (pp *pusherProto) ping(c *Conn) {
	if st := c.ext.(*pusherState); st.session != nil {
		st.session.Ping()
		return
	}
	c.sendOwned(wsframe.AppendFrame(nil, ws.OpPing, nil))
}

func (pp *pusherProto) idleClose(c *Conn) {
	c.closeWith(pusher.CodePongTimeout, "Pong reply not received", ReasonIdle)
}

// Send implements pusher.Conn: one text frame for this connection.
func (c *Conn) Send(msg []byte) {
	c.sendOwned(wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(msg))+len(msg)), ws.OpText, msg))
}

// Close implements pusher.Conn: start the close handshake with code.
func (c *Conn) Close(code int, reason string) {
	c.closeWith(ws.StatusCode(code), reason, ReasonProtocolClose)
}

// pusherHub adapts Hub to pusher.Hub.
type pusherHub struct{ h *Hub }

func (ph pusherHub) Subscribe(room string, c pusher.Conn)   { ph.h.Join(room, c.(*Conn)) }
func (ph pusherHub) Unsubscribe(room string, c pusher.Conn) { ph.h.Leave(room, c.(*Conn)) }

// Publish hands the fan-out to the pool instead of running it inline: the
// caller (an HTTP API request, or a client event) holds the app's lock and
// waits for nothing, and messages published while a fan-out runs share its
// next write to each member.
func (ph pusherHub) Publish(room string, msg []byte, except pusher.Conn) {
	ex, _ := except.(*Conn)
	r := ph.h.Room(room)
	if r != nil && r.publish(ws.OpText, msg, ex) {
		ph.h.s.poller.Submit(func(*poller.Worker) { r.flush() })
	}
}
func (ph pusherHub) Count(room string) int {
	if r := ph.h.Room(room); r != nil {
		return r.Len()
	}
	return 0
}
