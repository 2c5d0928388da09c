package server

import (
	"chatd/server/wsframe"

	"github.com/gobwas/ws"
)

// rawProto is the seed's protocol: /chat is the lobby, /chat/{room} a room,
// and every data message goes, same opcode and bytes, to every other member.
type rawProto struct{ s *Server }

func rawRoomKey(name string) string { return "chat/" + name }

func (p *rawProto) onOpen(c *Conn, rt route) {
	if p.s.cfg.MaxMessageRate > 0 {
		c.rlTokens = uint32(p.s.cfg.MaxMessageBurst) * 1000
		c.rlAt = uint32(p.s.since() / 1e6)
	}
	if rt.ident != nil {
		p.s.access.opened(c, rt.ident)
	}
	p.joinRaw(c, rt)
}

func (p *rawProto) onMessage(c *Conn, op ws.OpCode, payload []byte) {
	if h := p.s.cfg.testHookMessage; h != nil {
		h(payload)
	}
	p.s.stats.MessagesIn.Add(1)
	if p.s.cfg.MaxMessageRate > 0 && !p.allowMessage(c) {
		// Dropped, not published: the point of the limit is that one
		// client cannot make a large room cost a write per member per
		// message without bound.
		p.s.stats.RateLimited.Add(1)
		c.closeWith(ws.StatusPolicyViolation, "rate limit", ReasonRateLimited)
		return
	}
	// Raw auth's read-only members and the publish hook (publishhook.go).
	if p.s.access != nil && p.guarded(c, op, payload) {
		return
	}
	// Other nodes' members get it through the broker (nothing leaves the
	// process without a cluster); this node's, from the room's batch.
	if p.publishRaw(c, op, payload) {
		c.publish = publishedMustFlush // after this read's last message (Conn.feed)
	} else if c.publish == publishedNone {
		c.publish = publishedJoined
	}
}

// allowMessage takes one token from c's bucket (Config.MaxMessageRate,
// MaxMessageBurst), refilled by the milliseconds since it was last looked
// at: rate tokens a second are rate thousandths a millisecond. It reads
// the clock once and allocates nothing.
func (p *rawProto) allowMessage(c *Conn) bool {
	now := uint32(p.s.since() / 1e6)
	full := uint64(p.s.cfg.MaxMessageBurst) * 1000
	// uint32 arithmetic wraps correctly across the 49-day roll-over.
	t := uint64(c.rlTokens) + uint64(now-c.rlAt)*uint64(p.s.cfg.MaxMessageRate)
	c.rlAt = now
	t = min(t, full)
	if t < 1000 {
		c.rlTokens = uint32(t)
		return false
	}
	c.rlTokens = uint32(t - 1000)
	return true
}

func (p *rawProto) onClose(c *Conn) {
	if p.s.access != nil {
		p.s.access.closed(c) // first: no hook decision publishes for c after it
	}
	if s := p.s; s.kept != nil && s.rawHist.Size > 0 {
		// A join waiting for the room's history may set c.room from the
		// stream's goroutine, under the store's lock (joinKept).
		s.hist.Do(func() { p.leaveLocked(c) })
		return
	}
	p.leaveLocked(c)
}

func (p *rawProto) leaveLocked(c *Conn) {
	if c.room != nil {
		p.leaveRaw(c)
		if c.cong.Load() == congListed {
			c.room.drained(c) // producers must not wait for it any longer
		}
		c.room = nil
	}
}

func (p *rawProto) shutdownCode() ws.StatusCode     { return ws.StatusGoingAway }
func (p *rawProto) slowConsumerCode() ws.StatusCode { return ws.StatusPolicyViolation }

func (p *rawProto) timeouts(*Conn) (ping, idle int64) { return p.s.pingTicks, p.s.idleTicks }

// ping: RFC 6455 5.5.2, a ping "MAY be sent ... as a means to verify that
// the remote endpoint is still responsive"; its pong (or any byte) counts
// as activity.
func (p *rawProto) ping(c *Conn) { c.sendOwned(pingFrame) }

// pingFrame is every ping the server sends: framed once, queued by
// reference, never modified.
var pingFrame = wsframe.AppendFrame(nil, ws.OpPing, nil)

func (p *rawProto) idleClose(c *Conn) { c.closeWith(ws.StatusGoingAway, "idle timeout", ReasonIdle) }
