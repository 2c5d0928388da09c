package broker

// The NATS broker's outage hold: room messages published while NATS is
// away wait here, not in nats.go's reconnect buffer, until the other nodes
// are back too.
//
// Why not nats.go's buffer: it is flushed the moment this node reconnects,
// before the other nodes have (each tries every 500 ms on its own clock),
// and core NATS drops a message nobody subscribes to. The node that came
// back first would lose everything it held for the others, silently.
// So a node that lost NATS holds its room messages, in order, and sends
// them once every node it knew alive before the loss has been heard from
// after its reconnect (a node says "up" right after it re-subscribes,
// then every HeartbeatInterval, on the same connection as its
// subscriptions, so its interest is in place when its heartbeat is heard),
// or after holdMax, whichever comes first: a node that does not come back
// within holdMax is dead or cut off, and must not hold up the others.

import (
	"time"

	"github.com/nats-io/nats.go"
)

const (
	// holdMax bounds how long held messages wait for the other nodes
	// after this node reconnected: two heartbeats and a reconnect attempt.
	holdMax = 2*HeartbeatInterval + natsReconnectWait
	// holdPoll is how often a release looks for the other nodes.
	holdPoll = 20 * time.Millisecond
)

type heldMsg struct {
	subject string
	data    []byte
}

// publishMsg publishes one room message: at once while NATS is up and
// nothing is held, else behind the messages held (holdLocked).
func (b *NATS) publishMsg(subject string, msg []byte) {
	if b.holding.Load() || !b.nc.IsConnected() {
		b.hmu.Lock()
		if b.holding.Load() || !b.nc.IsConnected() {
			b.holdLocked(subject, msg)
			b.hmu.Unlock()
			return
		}
		b.hmu.Unlock()
	}
	if err := b.nc.Publish(subject, msg); err != nil {
		b.lost.Add(1)
		return
	}
	b.published.Add(1)
}

// holdLocked keeps msg to be sent after the outage; what does not fit in
// NATSConfig.ReconnectBuffer is lost and counted. b.hmu held.
func (b *NATS) holdLocked(subject string, msg []byte) {
	if !b.holding.Load() {
		b.beginHoldLocked()
	}
	if b.heldBytes+len(msg) > b.cfg.ReconnectBuffer {
		b.lost.Add(1)
		return
	}
	b.held = append(b.held, heldMsg{subject, msg})
	b.heldBytes += len(msg)
}

// beginHoldLocked starts holding: NATS is away. The nodes alive now are
// the ones the held messages wait for. b.hmu held.
func (b *NATS) beginHoldLocked() {
	b.holding.Store(true)
	b.holdGen++
	b.peers = nil
	if sh := b.getShared(); sh != nil {
		b.peers = sh.alivePeers()
	}
}

// lostNATS is nats.go's disconnect callback: hold from now on.
func (b *NATS) lostNATS() {
	b.hmu.Lock()
	if !b.holding.Load() {
		b.beginHoldLocked()
	}
	b.hmu.Unlock()
}

// backOnNATS is nats.go's (re)connect callback: release what is held once
// the other nodes are back (or after holdMax).
func (b *NATS) backOnNATS() {
	b.hmu.Lock()
	if !b.holding.Load() {
		b.hmu.Unlock()
		return
	}
	gen, peers, since := b.holdGen, b.peers, time.Now()
	b.hmu.Unlock()
	go b.release(gen, peers, since)
}

// release waits until every node of peers was heard from after since, or
// for holdMax, then publishes the held messages in order and stops
// holding, unless NATS went away again (then the next reconnect releases)
// or a newer hold began.
func (b *NATS) release(gen uint64, peers []string, since time.Time) {
	deadline := since.Add(holdMax)
	for time.Now().Before(deadline) {
		sh := b.getShared()
		if sh == nil || sh.heardSince(peers, since) {
			break
		}
		select {
		case <-b.stop:
			return
		case <-time.After(holdPoll):
		}
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if b.holdGen != gen || !b.nc.IsConnected() {
		return
	}
	b.flushHeldLocked()
}

// flushHeldLocked publishes the held messages and stops holding. b.hmu
// held: publishers wait meanwhile, so nothing overtakes a held message.
func (b *NATS) flushHeldLocked() {
	for i, m := range b.held {
		if err := b.nc.Publish(m.subject, m.data); err != nil {
			b.lost.Add(1)
		} else {
			b.published.Add(1)
		}
		b.held[i] = heldMsg{}
	}
	if len(b.held) > 0 {
		b.log.Info("sent the messages held while NATS was away", "node", b.cfg.NodeID, "messages", len(b.held),
			"bytes", b.heldBytes)
	}
	b.held = b.held[:0]
	if cap(b.held) > 1<<12 {
		b.held = nil
	}
	b.heldBytes = 0
	b.holding.Store(false)
	b.holdGen++
}

// closeHold sends what is held if NATS is up (Close flushes next), else
// counts it lost.
func (b *NATS) closeHold() {
	b.hmu.Lock()
	defer b.hmu.Unlock()
	if !b.holding.Load() {
		return
	}
	if b.nc.Status() == nats.CONNECTED {
		b.flushHeldLocked()
		return
	}
	b.lost.Add(uint64(len(b.held)))
	b.held, b.heldBytes = nil, 0
}

// alivePeers returns the other nodes heard from within the timeout.
func (sh *shared) alivePeers() []string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	var peers []string
	for node := range sh.lastSeen {
		if sh.aliveLocked(node, now) {
			peers = append(peers, node)
		}
	}
	return peers
}

// heardSince reports whether every node of peers was heard from after t
// (or said goodbye).
func (sh *shared) heardSince(peers []string, t time.Time) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, n := range peers {
		if at, ok := sh.lastSeen[n]; ok && !at.After(t) {
			return false
		}
	}
	return true
}
