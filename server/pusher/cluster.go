package pusher

// The Pusher layer in a cluster: the Cluster interface and the broker's
// calls for events from other nodes. Presence is in cluster_presence.go,
// occupancy and subscription counts in cluster_occupancy.go.

import (
	"strings"

	"chatd/server/broker"
)

// Cluster joins this node's Pusher state to the other nodes' of a cluster
// (chatd's NATS broker). Config.Cluster nil is a single node: everything
// stays in the process, as without this file.
//
// What the package sends through it:
//
//   - every event on a channel that is not a cache channel (HTTP API,
//     client events, server-to-user events): Publish, once per event, for
//     the other nodes' subscribers, with the socket_id to leave out;
//   - every event on a cache channel: PutCache, which stores it as the
//     channel's last event for the cluster and hands it to the other nodes
//     (Protocol.CacheUpdate there);
//   - this node's share of each presence member: SetPresence when a user's
//     first connection on this node subscribes, DeletePresence when its last
//     one here leaves. Every node learns every change, in one order
//     (Protocol.PresenceUpdate), and works out the same members from it:
//     member_added when a user's first entry anywhere appears,
//     member_removed when its last one goes, each node telling its own
//     subscribers;
//   - terminate_connections: Terminate, for the user's connections on the
//     other nodes;
//   - HTTP API counts: Gather asks the other nodes for their subscription
//     counts (Protocol.Counts there) and waits for the nodes alive.
type Cluster interface {
	NodeID() string
	Publish(room string, msg []byte, except string)
	PutCache(e broker.CacheEntry)
	SetPresence(app, channel, user string, info []byte)
	DeletePresence(app, channel, user string)
	Terminate(app, user string)
	Gather(app string, query []byte) [][]byte
	// SetOccupied records how many subscribers this node has in a
	// channel, 0 for none (only for apps with occupancy webhooks or
	// subscription counts); the change comes back through PresenceUpdate
	// as an entry with Occupancy set and the count as its Info.
	SetOccupied(app, channel string, subs int)
	// Owns reports whether this node speaks for node's changes: its own,
	// and those of a node gone silent when this is the alive node with
	// the smallest ID (the one that removes its entries). A cluster-wide
	// transition's webhook is posted by the node that owns it, so once.
	Owns(node string) bool
}

// SetCluster joins the protocol to a cluster. Call it before the first
// connection; nil leaves it a single node.
func (p *Protocol) SetCluster(c Cluster) {
	p.cluster = c
	if c != nil {
		p.node = c.NodeID()
	}
}

// CacheUpdate stores the last event of a cache channel published on
// another node and, when it is live, delivers it to this node's
// subscribers but the socket it leaves out.
func (p *Protocol) CacheUpdate(e broker.CacheEntry) {
	a := p.states[e.App]
	if a == nil || classify(e.Channel)&kindCache == 0 {
		return
	}
	var except Conn
	if e.Except != "" {
		except = a.conn(e.Except)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := p.now()
	a.cache.expire(now)
	a.cache.store(e.Channel, e.Msg, e.Data, now.Add(CacheTTL), a.app.MaxCacheChannels, a.app.MaxCacheBytes)
	if e.Live {
		a.rooms.Publish(a.room(e.Channel), e.Msg, except)
	}
}

// DeliverRemote delivers an event another node published to room (an app's
// channel, RoomKey) to this node's subscribers but the connection with
// socket_id except. Nothing keeps msg past the call: it is not a cache
// channel's (those come through CacheUpdate), and the room frames a copy.
func (p *Protocol) DeliverRemote(room string, msg []byte, except string) {
	appID, channel, ok := strings.Cut(room, "\x00")
	if !ok {
		return
	}
	a := p.states[appID]
	if a == nil {
		return
	}
	var ex Conn
	if except != "" {
		ex = a.conn(except)
	}
	a.rooms.Publish(RoomKey(appID, channel), msg, ex)
}

// Terminate closes this node's connections of a user, asked by another
// node's HTTP API.
func (p *Protocol) Terminate(appID, user string) {
	if a := p.states[appID]; a != nil {
		a.terminate(user)
	}
}

// Up is told whether the cluster's shared state works.
func (p *Protocol) Up(up bool) {
	p.log.Debug("pusher: cluster state", "up", up)
}
