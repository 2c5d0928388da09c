package server

import "github.com/gobwas/ws"

// rawProto is the seed's protocol: /chat is the lobby, /chat/{room} a room,
// and every data message goes, same opcode and bytes, to every other member.
type rawProto struct{ s *Server }

func rawRoomKey(name string) string { return "chat/" + name }

func (p *rawProto) onOpen(c *Conn) { c.room = p.s.hub.Join(c.target, c) }

func (p *rawProto) onMessage(c *Conn, op ws.OpCode, payload []byte) {
	if h := p.s.cfg.testHookMessage; h != nil {
		h(payload)
	}
	p.s.stats.MessagesIn.Add(1)
	c.room.Publish(op, payload, c)
}

func (p *rawProto) onClose(c *Conn) {
	if c.room != nil {
		p.s.hub.Leave(c.target, c)
		c.room = nil
	}
}

func (p *rawProto) shutdownCode() ws.StatusCode     { return ws.StatusGoingAway }
func (p *rawProto) slowConsumerCode() ws.StatusCode { return ws.StatusPolicyViolation }
