// Package broker carries room messages between the chatd nodes of a
// cluster. It knows rooms by their hub keys and messages as an opcode and
// bytes; it knows nothing of connections, WebSocket framing or protocols.
//
// The engine (package server) holds one Broker:
//
//   - Local, the default: a single node; nothing leaves the process and
//     every method is free.
//   - NATS: core NATS subjects, one per room, carry one NATS message per
//     published message to the nodes that have members in the room.
//
// # Usage
//
//	b, err := broker.NewNATS(broker.NATSConfig{URLs: urls, NodeID: id, Deliver: deliver, Logger: log})
//	b.Interest(room, true)   // the room got its first member on this node
//	b.Publish(room, op, msg) // a member on this node sent msg
//	b.Interest(room, false)  // the room lost its last member on this node
//	b.Close()
//
// # Goroutines and ordering
//
// Interest and Publish may be called from any goroutine and never wait on
// the network. Deliver is called on one goroutine owned by the broker, for
// every message another node published to a room this node is interested
// in, in the order this node's connection received them; its payload is
// valid only during the call. A node never receives its own messages.
// Messages of one publishing node arrive at every other node in the order
// they were published (one connection per node, and NATS keeps a
// connection's order).
//
// # Shared state (the Pusher layer's, EnableShared)
//
// Room messages need no shared state: each node delivers to its own
// members. Pusher presence, cache channels, occupancy and the HTTP API's
// counts do, and they live in NATS too, never in a protocol of our own
// between nodes:
//
//   - JetStream key-value bucket chatd_presence (file storage, history 1):
//     one key per (app, channel, user, node) that has connections, and
//     one per (app, channel, node) with the node's subscription count when
//     an app wants occupancy webhooks or subscription counts. A node
//     writes only its own keys (SetPresence, DeletePresence,
//     SetOccupied), from one writer goroutine, as the desired state of
//     each key: a failed write stays due and is done again once NATS is
//     back. Every node watches the whole bucket (one ordered consumer) and
//     hands every change to the handler in the stream's order, which is
//     the same on every node; the handler (package pusher) derives the
//     members from it deterministically, so all nodes agree.
//   - Bucket chatd_cache (30 min TTL, 64 MiB): the last event of each cache
//     channel, written in order by the publishing node and watched by
//     every node (CacheUpdate), so a subscriber anywhere gets the
//     cluster's last event.
//   - Core NATS subjects PREFIX.node (heartbeats "up ID" every second and
//     "down ID" on Close; a node new to another is answered at once),
//     PREFIX.pctl (terminate a user's connections) and PREFIX.pq (a query
//     every node answers; Gather waits for as many answers as nodes are
//     alive, or gatherTimeout if one died meanwhile).
//
// # History (EnableHistory, history.go)
//
// Rooms that keep history do not use the room subjects: their messages go
// through the JetStream stream CHATD_HISTORY, which every node, the
// sender's included, consumes per room with an ordered consumer, so that
// every node delivers a room's messages in the stream's order and the
// room's recent messages are kept once for the cluster. history.go says
// how a node warms up a room, names positions (the stream's epoch and
// sequence) and tells the sender's node to leave the sender out.
//
// A node unheard for the node timeout loses its entries: the alive node
// with the smallest ID deletes them (its watcher knows every node's keys),
// and Owns tells the handler which node speaks for a change, so that a
// transition's webhook is posted once. A node shutting down deletes its
// own entries at once (Withdraw). When NATS comes back, the broker starts
// the watchers over (PresenceReset, then updates) and stores its own
// desired state over what the bucket holds: entries it no longer has are
// deleted, missing ones put back.
//
// Lock order: NATS.mu and shared.mu are leaves, taken after the Pusher
// layer's locks (its appState.mu is held when it calls SetPresence or
// Owns); no handler is called with either held.
package broker
