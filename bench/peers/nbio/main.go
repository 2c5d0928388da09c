// Command nbio-chat is a peer server for side-by-side chatbench runs: a
// chat server on github.com/lesismal/nbio's own event loop (nbhttp.Engine
// in its non-blocking mode, a few poller goroutines serving every
// connection, and nbio's websocket Upgrader), speaking chatd's raw
// protocol: a WebSocket at /chat/{room} (/chat is the room "lobby"), and
// every message a member sends goes, with its opcode, to every other
// member of the room.
//
//	cd bench/peers/nbio && go build -o /tmp/nbio-chat . && /tmp/nbio-chat -addr 127.0.0.1:8080
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// rooms is the member set of every room. Broadcasts hold the read lock
// while they write: nbio's writes never block (what the socket does not
// take is buffered), and its close callbacks run asynchronously, so no
// callback waits on this lock while holding it.
type rooms struct {
	mu sync.RWMutex
	m  map[string]map[*websocket.Conn]struct{}
}

func (rs *rooms) join(name string, c *websocket.Conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.m[name]
	if r == nil {
		r = map[*websocket.Conn]struct{}{}
		rs.m[name] = r
	}
	r[c] = struct{}{}
}

func (rs *rooms) leave(name string, c *websocket.Conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r := rs.m[name]; r != nil {
		delete(r, c)
		if len(r) == 0 {
			delete(rs.m, name)
		}
	}
}

func (rs *rooms) broadcast(name string, from *websocket.Conn, op websocket.MessageType, data []byte) {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for c := range rs.m[name] {
		if c != from {
			_ = c.WriteMessage(op, data) // a failed write closes c, and OnClose removes it
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("nbio-chat: unexpected arguments %q", flag.Args())
	}
	logging.SetLevel(logging.LevelError)

	rs := &rooms{m: map[string]map[*websocket.Conn]struct{}{}}
	up := websocket.NewUpgrader()
	up.KeepaliveTime = 0 // no idle read deadline: idle members stay, as in chatd
	up.OnMessage(func(c *websocket.Conn, op websocket.MessageType, data []byte) {
		if room, ok := c.Session().(string); ok {
			rs.broadcast(room, c, op, data)
		}
	})
	up.OnClose(func(c *websocket.Conn, _ error) {
		if room, ok := c.SessionWithLock().(string); ok { // another goroutine set it
			rs.leave(room, c)
		}
	})
	serve := func(w http.ResponseWriter, r *http.Request, room string) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has answered the request
		}
		// The handler runs on the connection's serial executor, so its
		// first message is handled only after it has joined.
		c.SetSession(room)
		rs.join(room, c)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /chat", func(w http.ResponseWriter, r *http.Request) { serve(w, r, "lobby") })
	mux.HandleFunc("GET /chat/{room}", func(w http.ResponseWriter, r *http.Request) { serve(w, r, r.PathValue("room")) })

	engine := nbhttp.NewEngine(nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{*addr},
		IOMod:                   nbhttp.IOModNonBlocking,
		MaxLoad:                 1_000_000,
		ReadBufferSize:          4 << 10,
		ReleaseWebsocketPayload: true,
		Handler:                 mux,
	})
	if err := engine.Start(); err != nil {
		log.Fatalf("nbio-chat: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	engine.Stop()
}
