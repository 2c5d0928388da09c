package broker

// Broker is what the engine needs from a cluster transport.
type Broker interface {
	// Interest counts a room's members on this node up (on) or down: while
	// the count is above zero the node receives the room's messages from
	// other nodes. Calls for one room may arrive in any order (the final
	// count is what matters), so the engine need not hold a lock across
	// its membership change and this call.
	Interest(room string, on bool)
	// Publish sends a message of a member of this node to the room's
	// members on every other node. It does not wait: what the transport
	// cannot take is counted in Stats.Lost.
	Publish(room string, op byte, payload []byte)
	// Congested tells the other nodes that room is behind on this node
	// (on) or caught up again (off), so that they hold the room's
	// producers back (NATSConfig.Congestion). While on, it is said again
	// every CongestionRefresh; a node that stops saying it is taken as
	// caught up after CongestionTTL.
	Congested(room string, on bool)
	// Stats returns the broker's counters.
	Stats() Stats
	// Close stops the broker; no Deliver call follows its return.
	Close() error
}

// Stats are a broker's counters.
type Stats struct {
	Connected bool   // the transport is up (always true for Local)
	SharedUp  bool   // the Pusher layer's shared state works (always true for Local)
	Rooms     int    // rooms this node receives
	Published uint64 // messages handed to the transport
	Delivered uint64 // messages from other nodes handed to Deliver
	Lost      uint64 // messages that could not be published or were dropped on receipt
	Reconnect uint64 // times the transport reconnected

	Nodes           int    // nodes alive, this one included (heard from within the node timeout)
	PresenceEntries int    // presence entries (user, channel, node) in the cluster
	PendingWrites   int    // this node's presence changes not yet stored
	Purged          uint64 // presence entries of silent nodes this node removed
}

// Deliver receives a message another node published to room.
type Deliver func(room string, op byte, payload []byte)

// Congestion receives another node's Congested: room is behind on node
// (on) or caught up there (off).
type Congestion func(room, node string, on bool)

// Local is the single-node broker: no other node exists.
type Local struct{}

func (Local) Interest(string, bool)        {}
func (Local) Publish(string, byte, []byte) {}
func (Local) Congested(string, bool)       {}
func (Local) Stats() Stats                 { return Stats{Connected: true, SharedUp: true} }
func (Local) Close() error                 { return nil }
