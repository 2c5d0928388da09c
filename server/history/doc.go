// Package history keeps the recent messages of rooms and channels in
// memory, each with a position, so that a late joiner can be given what
// was said before it came and a client whose connection blinked can be
// given exactly what it missed.
//
// A stream is one room's (or one Pusher channel's) history, named by the
// engine's room key. Every message appended to a stream gets the next
// offset (1, 2, 3, ...) within the stream's epoch: a name the store gives
// the stream when it creates it. Offsets only grow within an epoch; a new
// epoch means continuity cannot be promised (the process restarted, or the
// stream was forgotten, all its messages expired or evicted, and created
// again), so a client holding a position of another epoch is told that
// something may be missing instead of being handed a silent gap.
//
// # Bounds
//
// A stream keeps its last Limits.Size messages, none older than
// Limits.TTL (both per call, so that each Pusher app can have its own).
// All streams together keep at most Config.MaxBytes (frames plus a fixed
// overhead per message): past it, the least recently published stream is
// forgotten whole (Stats.Evicted). A sweep once a second drops expired
// messages and forgets streams left empty, so a room with no members and
// no history costs nothing.
//
// # Order and atomicity
//
// One mutex guards the store. Append calls its encode and deliver
// callbacks with it held, and Join calls its join callback with it held:
// the engine puts the message into the room's fan-out (deliver) and adds a
// member to the room and queues its replay (join) inside those callbacks,
// so that the order members receive a room's messages is the order of
// their positions, and a joiner gets every message exactly once: from the
// history if it was appended before the join, live if after. The callbacks
// must not call back into the store. Lock order: the store's mutex before
// the engine's hub, room and connection locks (and after the Pusher
// layer's per-app lock).
//
// Items are stored as given (the engine stores WebSocket frames, so that a
// replay is the stored bytes written as they are); they must not be
// modified after Append.
package history
