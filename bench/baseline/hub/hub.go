package hub

import (
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config tunes the server; the zero value is the gorilla chat example's
// settings with a larger message limit.
type Config struct {
	SendBuffer   int           // messages queued per member before it is dropped; zero means 256
	MaxMessage   int64         // largest message read; zero means 64 KiB
	PingInterval time.Duration // zero means 54s
	PongWait     time.Duration // read deadline renewed by each pong; zero means 60s
	WriteWait    time.Duration // deadline of each write; zero means 10s
}

func (c *Config) setDefaults() {
	if c.SendBuffer <= 0 {
		c.SendBuffer = 256
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = 64 << 10
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 54 * time.Second
	}
	if c.PongWait <= 0 {
		c.PongWait = 60 * time.Second
	}
	if c.WriteWait <= 0 {
		c.WriteWait = 10 * time.Second
	}
}

// Server routes /chat and /chat/{room} to room hubs. It is an http.Handler.
type Server struct {
	cfg      Config
	upgrader websocket.Upgrader
	mux      *http.ServeMux

	mu    sync.Mutex
	rooms map[string]*Hub
}

// New builds a Server.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:   cfg,
		rooms: map[string]*Hub{},
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("GET /chat", func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, "lobby") })
	s.mux.HandleFunc("GET /chat/{room}", func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, r.PathValue("room")) })
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// room returns the hub of name, starting it on first use.
func (s *Server) room(name string) *Hub {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.rooms[name]
	if h == nil {
		h = newHub()
		s.rooms[name] = h
		go h.run()
	}
	return h
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, room string) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{hub: s.room(room), conn: conn, send: make(chan message, s.cfg.SendBuffer), cfg: &s.cfg}
	c.hub.register <- c
	go c.writePump()
	go c.readPump()
}

// message is one data message and who sent it.
type message struct {
	from *client
	op   int
	data []byte
}

// Hub is one room: the member set, owned by the run goroutine.
type Hub struct {
	clients    map[*client]bool
	broadcast  chan message
	register   chan *client
	unregister chan *client
}

func newHub() *Hub {
	return &Hub{
		clients:    map[*client]bool{},
		broadcast:  make(chan message),
		register:   make(chan *client),
		unregister: make(chan *client),
	}
}

func (h *Hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				if c == m.from {
					continue
				}
				select {
				case c.send <- m:
				default:
					// The member does not keep up: drop it, as the example does.
					delete(h.clients, c)
					close(c.send)
				}
			}
		}
	}
}

// client is one connection and its two goroutines.
type client struct {
	hub  *Hub
	conn *websocket.Conn
	send chan message
	cfg  *Config
}

func (c *client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(c.cfg.MaxMessage)
	_ = c.conn.SetReadDeadline(time.Now().Add(c.cfg.PongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(c.cfg.PongWait))
	})
	for {
		op, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.hub.broadcast <- message{from: c, op: op, data: data}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(c.cfg.PingInterval)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case m, ok := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteWait))
			if !ok {
				_ = c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(m.op, m.data); err != nil {
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}
