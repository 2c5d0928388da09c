// Package server is chatd's WebSocket layer: handshake, frames, connections,
// rooms, fan-out and timers, on top of package poller.
//
// # Usage
//
//	s, err := server.New(server.Config{Addr: ":8080"})
//	if err != nil { ... }
//	if err := s.Start(); err != nil { ... }
//	defer s.Shutdown(context.Background())
//
// or simply server.Run(ctx, cfg), which serves until ctx ends.
//
// # Data path
//
// A new socket starts in the handshake state: its request head is collected
// in a small pooled buffer as bytes arrive (capped at 8 KiB and by
// Config.HandshakeTimeout). A WebSocket upgrade for /chat, /chat/{room} (or
// /app/{key} when Pusher is enabled) is parsed by gobwas/ws's Upgrader from
// that buffer; any other request is handed to a net/http server through an
// in-memory listener with the bytes already read put back in front.
//
// An open connection's bytes go through a wsframe.Decoder (no per-connection
// buffer between messages). A message is published to its Room: framed once
// into the room's pending batch, then written to every other member directly
// from the fan-out job. What a member's socket does not take waits in its
// bounded queue (references to the shared batch) and is flushed with writev
// on EPOLLOUT; past Config.WriteQueue the member is closed with 1008.
//
// # Goroutines
//
// Poller callbacks (handshake, decoding, protocol handlers, closing) run on
// pool workers, one at a time per connection. Fan-out runs on whichever
// worker published (small rooms) or as chunk jobs on the pool. The timing
// wheel runs on its own goroutine. None of these block.
//
// # Lock order
//
//	Hub.mu -> Room.mu -> Conn.wmu -> wheel.mu
//
// Fan-out never holds Room.mu while writing (it works on a snapshot of the
// members). The socket is closed only from the connection's own callback
// (finalize), under Conn.wmu, so no writer can touch a reused fd number.
package server
