package pusher

// Conn is one WebSocket connection on /app/{key}, provided by the engine.
// Methods are safe for concurrent use.
//
// Send must not call back into this package synchronously (the package may
// hold its locks while it calls Send); a connection that Send finds too slow
// is closed by the engine, which reports Session.Closed later, from the
// connection's own callback. Close may call Session.Closed synchronously:
// the package never holds a lock while it calls Close.
type Conn interface {
	// Send queues one text frame (a Pusher JSON message) for this connection only. Never blocks.
	// The engine may keep msg until it is written; the package never modifies msg after
	// the call, and may hand the same slice to several connections.
	Send(msg []byte)
	// Close sends a close frame with code and reason, then closes. Idempotent.
	Close(code int, reason string)
}

// Rooms is the engine's room registry with encode-once fan-out.
//
// Room keys are app-qualified channel names built by RoomKey:
// appID + "\x00" + channel. NUL cannot occur in an app ID or in a channel
// name, so rooms of different apps never collide and the engine needs no
// knowledge of apps.
//
// Like Conn.Send, Rooms methods must not call back into this package
// synchronously: the package may call them with its per-app lock held, so
// that presence and cache events keep their order.
type Rooms interface {
	Subscribe(room string, c Conn)   // idempotent
	Unsubscribe(room string, c Conn) // idempotent
	// Publish frames msg once and delivers it to every member of room except `except` (may be nil).
	// msg is immutable from the call on: the package keeps it (cache channels replay it).
	Publish(room string, msg []byte, except Conn)
}

// RoomKey returns the room key of channel in the app with ID appID.
func RoomKey(appID, channel string) string {
	return appID + "\x00" + channel
}
