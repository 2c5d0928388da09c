package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"chatd/server/broker"

	"github.com/gobwas/ws"
)

// ClusterConfig joins a server to the other chatd nodes of a cluster. The
// zero value is a single node: nothing leaves the process.
type ClusterConfig struct {
	// NATS are the URLs of the NATS servers the nodes meet at
	// (nats://host:4222). Empty: a single node.
	NATS []string
	// NodeID names this node in logs and in its NATS connection. Zero
	// means a random ID, logged at start.
	NodeID string
}

// newBroker returns the broker cfg.Cluster asks for: broker.Local without
// NATS URLs, else a NATS broker that delivers other nodes' messages to
// this node's members.
//
// What crosses nodes today: raw /chat rooms. A message a member sends is
// delivered to the room's members on its own node as before (encode once,
// batched) and published once to NATS; every other node with members in
// the room (interest follows its first and last member, Hub.join and
// Hub.Leave) hands it to them through Hub.Publish. Pusher channels stay
// within their node.
func (s *Server) newBroker() (broker.Broker, error) {
	cc := &s.cfg.Cluster
	if len(cc.NATS) == 0 {
		return broker.Local{}, nil
	}
	if cc.NodeID == "" {
		var id [6]byte
		_, _ = rand.Read(id[:])
		cc.NodeID = hex.EncodeToString(id[:])
	}
	b, err := broker.NewNATS(broker.NATSConfig{
		URLs:    cc.NATS,
		NodeID:  cc.NodeID,
		Deliver: s.deliverRemote,
		Logger:  s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("server: cluster: %w", err)
	}
	s.log.Info("chatd node joining the cluster", "node", cc.NodeID, "nats", cc.NATS)
	return b, nil
}

// deliverRemote hands a message another node published to this node's
// members of room (on the broker's goroutine; the fan-out runs on the
// pool).
func (s *Server) deliverRemote(room string, op byte, payload []byte) {
	s.hub.Publish(room, ws.OpCode(op), payload, nil)
}
