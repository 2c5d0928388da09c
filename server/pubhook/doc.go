// Package pubhook asks a backend whether a message may be published: a
// POST of the message as JSON, signed like Pusher webhooks, answered with
// {"action":"allow"}, {"action":"replace","data":"..."} or
// {"action":"reject","reason":"..."}. chatd calls it before the fan-out of
// a raw room's message and of a Pusher client event.
//
// Usage:
//
//	h := pubhook.New(pubhook.Config{URL: url, Key: key, Secret: secret})
//	defer h.Close()
//	h.Submit(conn, pubhook.Message{Room: "lobby", Data: "hi"}, func(d pubhook.Decision) {
//		// publish d.Data, or drop it (d.Action == pubhook.Reject)
//	})
//
// Goroutines: a fixed pool of Config.Concurrency goroutines makes the
// POSTs; Submit never waits for one. The done callback of a message runs
// on one of them, after the callbacks of every message the same sender
// submitted before it (one sender's messages are asked about one at a
// time, in order); callbacks of different senders run concurrently.
// Cancel(sender) returns once no callback of that sender runs, and none
// runs afterwards.
//
// Bounds: at most Concurrency POSTs at once, at most Config.Queue messages
// waiting for one. A message submitted over the queue bound still keeps
// its place behind its sender's earlier ones, but is decided without a
// POST, by the failure policy (Failure QueueFull), so a backend that is
// slow cannot make chatd hold an unbounded backlog of requests.
package pubhook
