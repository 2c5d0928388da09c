// Package hub is the reference chat server chatbench compares chatd with:
// what a Go developer writes from the gorilla/websocket chat example. Each
// room is a Hub goroutine owning its member set; each connection has a
// read goroutine (ReadMessage, hand the message to the hub) and a write
// goroutine (drain a buffered channel, one WriteMessage per message, pings
// on a ticker). A member whose channel is full when the hub broadcasts is
// dropped and its channel closed, as in the example; the write goroutine
// then sends an empty close frame and closes the socket.
//
// The protocol is chatd's raw one: a WebSocket at /chat/{room} (/chat is
// the room "lobby"), and every text or binary message a member sends is
// delivered verbatim, with its opcode, to every other member of the room;
// the sender never gets its own.
//
// Usage:
//
//	srv := hub.New(hub.Config{})
//	http.ListenAndServe("127.0.0.1:9000", srv)
//
// Goroutines: one per room (Hub.run, never exits), two per connection.
// Rooms live as long as the server: that is the example's shape, and what
// the comparison measures.
package hub
