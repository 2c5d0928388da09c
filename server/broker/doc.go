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
package broker
