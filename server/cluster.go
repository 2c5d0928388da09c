package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

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
	// means a random ID, logged at start. Several processes may share
	// one (a rolling restart): each joins under its own identity,
	// NodeID#8-hex-digits (broker.NATS.Identity).
	NodeID string
	// NodeTimeout is how long a node may go unheard (killed without a
	// word, or cut off from NATS) before the cluster takes its Pusher
	// presence away. Zero means broker.DefaultNodeTimeout (10 s).
	NodeTimeout time.Duration
}

// newBroker returns the broker cfg.Cluster asks for: broker.Local without
// NATS URLs, else a NATS broker that delivers other nodes' messages to
// this node's members.
//
// What crosses nodes: raw /chat rooms and Pusher channels. A message is
// delivered to the room's members on its own node as before (encode once,
// batched) and published once to NATS; every other node with members in
// the room (interest follows its first and last member, Hub.join and
// Hub.Leave) hands it to them through Hub.Publish. A Pusher event carries
// the socket_id it must not reach, resolved on each node. Pusher presence,
// cache channels, terminate_connections and the HTTP API's counts go
// through the broker's shared state (broker.NATS.EnableShared, package
// pusher's Cluster).
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
		// Producers here wait for a raw room's members on other nodes.
		Congestion: s.hub.RemoteCongestion,
		Logger:     s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("server: cluster: %w", err)
	}
	s.log.Info("chatd node joining the cluster", "node", cc.NodeID, "identity", b.Identity(), "nats", cc.NATS)
	s.pusher.SetCluster(pusherCluster{b})
	b.EnableShared(s.pusher, cc.NodeTimeout)
	s.enableClusterHistory(b)
	return b, nil
}

// opPusher marks a broker message as a Pusher event: the payload is the
// socket_id to leave out (appendExcept), then the event.
const opPusher = 0x80

// deliverRemote hands a message another node published to this node's
// members of room (on the broker's goroutine; the fan-out runs on the
// pool).
func (s *Server) deliverRemote(room string, op byte, payload []byte) {
	if op == opPusher {
		if len(payload) < 1 || len(payload) < 1+int(payload[0]) {
			return
		}
		n := 1 + int(payload[0])
		// The room's batch copies the message as it frames it.
		s.pusher.DeliverRemote(room, payload[n:], string(payload[1:n]))
		return
	}
	s.hub.PublishRemote(room, ws.OpCode(op), payload)
}

// pusherCluster is package pusher's Cluster on the NATS broker.
type pusherCluster struct{ *broker.NATS }

// NodeID is the node's identity (unique per process), which the shared
// state's entries name.
func (pc pusherCluster) NodeID() string { return pc.NATS.Identity() }

// Publish sends a Pusher event to the room's subscribers on the other
// nodes, but the connection with socket_id except.
func (pc pusherCluster) Publish(room string, msg []byte, except string) {
	if len(except) > 255 {
		except = "" // not a socket_id: the HTTP API checks them
	}
	pc.NATS.PublishParts(room, opPusher, []byte{byte(len(except))}, []byte(except), msg)
}
