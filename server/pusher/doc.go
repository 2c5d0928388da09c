// Package pusher implements the Pusher Channels protocol, version 7, on top
// of an engine that owns sockets, WebSocket framing, rooms and fan-out, so
// that pusher-js, laravel-echo and the pusher server SDKs work with chatd
// unchanged.
//
// The package knows nothing of sockets: the engine hands it a Conn per
// connection (Send a text frame, Close with a code) and a Rooms (rooms with
// encode-once Publish). It provides
//
//   - the WebSocket side (Protocol.Open, Session): connection_established
//     with an unguessable socket_id, ping/pong, subscribe/unsubscribe to
//     public, private-, presence-, cache- (and private-cache-,
//     presence-cache-, private-encrypted-[cache-]) channels with HMAC
//     authorization, presence members counted per user, client-* events
//     with a per-connection rate limit, pusher:signin and the user's
//     #server-to-user- channel, and the protocol's error and close codes;
//   - the HTTP API (Protocol.APIHandler, mounted at /apps/): signed
//     events, batch_events, channel and user queries, terminate_connections;
//   - a demo auth and publish endpoint for the default app
//     (Protocol.DemoHandler, mounted at /pusher/), rate limited as a whole
//     (DemoRequestsPerSecond, DemoBurst) because it signs for anybody;
//   - the app registry (App, Apps, NewApps, LoadAppsFile, LoadApps);
//   - the app's backend told what happens: webhooks (webhook.go: their
//     settings) posted from the state transitions (webhook_events.go),
//     batched, filtered, signed and retried (webhook_delivery.go);
//     pusher_internal:subscription_count (subcount.go) and watchlist
//     online/offline events for signed-in users (watchlist.go).
//
// # Usage
//
//	apps, err := pusher.LoadApps(*appsFile, pusher.App{ID: *id, Key: *key, Secret: *secret, ClientEvents: true})
//	proto, err := pusher.New(pusher.Config{Apps: apps, Rooms: rooms, Logger: log})
//	mux.Handle("/apps/", proto.APIHandler())
//	mux.Handle("/pusher/", proto.DemoHandler())
//
//	// WebSocket upgrade of /app/{key}?protocol=7 (the engine):
//	s := proto.Open(conn, key, query) // nil: refused, conn is being closed
//	// accept frames of up to s.MaxMessageBytes() (the app's event limit
//	// plus room for escaping), even above the engine's own limit
//	// each text frame:               s.Message(payload)
//	// silent for s.ActivityTimeout(): s.Ping(); still silent PongTimeout later:
//	//                                conn.Close(pusher.CodePongTimeout, "Pong reply not received")
//	// connection gone (any reason):  s.Closed()
//
// # Memory
//
// What an anonymous client can make the package keep is bounded: channel,
// presence and socket state by connections times the app's
// MaxChannelsPerConn and MaxPresenceMembers, and the last events of cache
// channels — kept for CacheTTL even with nobody subscribed, as Pusher
// does — by the app's MaxCacheChannels and MaxCacheBytes, the least
// recently published evicted first. Protocol.Stats counts cache entries,
// bytes, evictions and expirations for the engine's metrics.
//
// # Rooms
//
// A channel's Rooms room is RoomKey(appID, channel) = appID + "\x00" +
// channel, so apps share one rooms without colliding.
//
// # Goroutines
//
// Open, Session.Message and Session.Closed are called from the
// connection's own callbacks on the engine's workers, one at a time per
// connection: Open once the upgrade is done, Message for each text frame
// (a session mutex serializes the calls anyway), and Closed exactly once,
// from the connection's teardown, whatever ended it. Whatever else ends a
// connection (a fan-out job that found the client too slow, the timing
// wheel, this package calling Conn.Close) only asks it to close; its own
// callback then tears it down and calls Closed. Session.Ping is called from
// the engine's timer goroutine, concurrently with the connection's
// callbacks; Session.ActivityTimeout from there and once from the callback
// that called Open, to arm the first timer. The HTTP handlers, and
// Protocol.Stats, AppStats and APICounts (from the engine's /metrics, on
// its admin listener), run on net/http's goroutines. Every entry point is safe for concurrent use. The payload
// given to Message is valid only during the call; nothing keeps it.
// Messages given to Conn.Send and Rooms.Publish are never modified afterwards
// (cache channels keep the last one and Send it again to new subscribers).
//
// New starts the package's own goroutines, a constant number: two senders
// per configured webhook, which do the HTTP, and, if an app counts
// subscriptions, one sweep that sends the changed counts once a second.
// Protocol.Shutdown ends them. The protocol's callbacks only append an
// encoded event to a webhook's bounded queue (or count it as overflow):
// nothing on a worker waits for a webhook.
//
// # Cluster
//
// With SetCluster (chatd's NATS broker), presence channels, cache channels,
// terminate_connections, the HTTP API's reads, occupancy webhooks and
// subscription counts are the cluster's (cluster.go explains what goes
// through the Cluster and how every node derives the same members from the
// cluster's ordered presence entries). The broker calls PresenceReset,
// PresenceUpdate, CacheUpdate, DeliverRemote, Terminate, Counts and Up
// from its own goroutines; each takes the app's appState.mu like the
// connection callbacks do. A presence subscription in a cluster completes
// asynchronously, from PresenceUpdate, when this node's entry comes back.
//
// # Locks
//
// There are four. Three of them nest, always taken in this order:
//
//  1. Session.mu — one connection's subscriptions, signed-in user and
//     client event rate limiter.
//  2. appState.mu — one app's occupied channels, presence members,
//     signed-in users and the cache of its cache channels (eventCache has
//     no lock of its own). Rooms methods and Conn.Send are called with it
//     held where the order matters (subscribe, unsubscribe, a closed
//     connection leaving its channels, an event delivered to a cache
//     channel), so that subscription_succeeded, member_added/removed and
//     cache replays are decided and handed to the engine in one order.
//  3. appState.sockMu — the socket_id index; a leaf: nothing is called and
//     no lock is taken while it is held.
//
// The fourth, demoLimiter.mu, guards the demo endpoints' shared rate
// limiter and is only ever taken alone.
//
// Two more are leaves taken after appState.mu (or alone):
// webhookTarget.mu, one webhook's queue, and subscriptionCounts.mu, an
// app's changed counts. Nothing is called while either is held.
//
// Conn.Send and the Rooms methods may be called with Session.mu,
// appState.mu or both held, so the engine's own locks come after these,
// and the engine must not call back into this package from inside
// Conn.Send or any Rooms method (Send on a slow consumer closes it; Closed
// follows later, from the connection's own callback). Conn.Close is never
// called with a lock held, so an engine may call Session.Closed from
// inside it. The engine's full lock order, these included, is written in
// server/doc.go.
package pusher
