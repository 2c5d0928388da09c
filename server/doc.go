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
// that buffer; GET /healthz is answered on the spot (the public port has
// no /metrics: that is the admin listener's); any other request is
// handed to a net/http server through an in-memory listener with the bytes
// already read put back in front (conn_handshake.go, http.go).
//
// An open connection's bytes go through a wsframe.Decoder (no per-connection
// buffer between messages). A message is published to its Room: framed once
// into the room's pending batch, then written to every other member directly
// from the fan-out job. What a member's socket does not take waits in its
// bounded queue (references to the shared batch) and is flushed with writev
// on EPOLLOUT (conn_write.go); past Config.WriteQueue the member is closed
// with 1008 (conn_close.go). A raw producer whose room cannot keep its pace
// is not read until it can (Room.holdBack). Everything outside a room's own
// members publishes through Hub.Publish; Hub.Join and Hub.Leave say when a
// room gets its first or loses its last member on this node.
//
// # Operations
//
// Config.AdminAddr opens a second, plain net/http listener for operators
// (admin.go): /metrics from a prometheus.Registry of the server's own
// (metrics.go), /debug/pprof/, /healthz and /readyz, which answers 503
// from the moment Shutdown begins (Config.ShutdownDelay keeps serving that
// long before the close frames) and while the broker is disconnected. The
// metrics read the server's atomic counters at scrape time; the delivery
// path adds nothing but one counter add per fan-out chunk and one
// histogram observation per batch. Abuse limits: Config.MaxConnsPerIP
// (HTTP 429, per client address as clientaddr.go works it out from the
// peer and, for Config.TrustedProxies, X-Forwarded-For / X-Real-IP) and
// Config.MaxMessageRate (a token bucket in two uint32 fields of Conn,
// raw protocol only; 1008 "rate limit").
//
// # Goroutines
//
// Poller callbacks (handshake, decoding, protocol handlers, closing) run on
// pool workers, one at a time per connection. Fan-out runs on whichever
// worker published (small rooms) or as chunk jobs on the pool. The timing
// wheel runs on its own goroutine, and a room whose members are behind has
// a timer (Room.stallCheck). None of these block.
//
// # Lock order
//
// All of chatd's locks, the Pusher layer's included, in the one order in
// which they nest (a lock may be taken while holding only locks above it):
//
//	pusher.Session.mu        one Pusher connection's subscriptions and user
//	pusher appState.mu       one app's channels, presence, users, cache
//	history.Store.mu         kept messages; held while a kept message is put
//	                         into its room's fan-out and while a joiner is
//	                         added and queued its replay (history.go)
//	Hub.mu                   the room registry
//	Room.mu                  one room's members, pending batch, backpressure
//	Conn.wmu                 one connection's queue and close state
//	wheel.mu                 the timing wheel's slots
//	poller overflowMu        tasks that found the worker queue full
//
// Leaves, taken alone or last: pusher appState.sockMu (socket_id index),
// the Pusher webhook queues' and subscription counts' locks, the Pusher
// demo rate limiter's lock, pusher apiCounters.mu (HTTP API request
// counts), ipLimiter.mu (connections per client address),
// poller.Listener.mu and Poller.mu.
// The Pusher layer calls Hub (through pusher.Rooms) and Conn.Send with its
// locks held, which is why the engine never calls back into package pusher
// from there; Session.Closed is called from the connection's own teardown,
// with no lock held.
//
// Fan-out never holds Room.mu while writing (it works on a snapshot of the
// members). A connection is marked closed under Conn.wmu (teardown) before
// its socket is closed, and every writer checks that mark under Conn.wmu,
// so no writer can touch a reused fd number.
package server
