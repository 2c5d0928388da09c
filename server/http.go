package server

import (
	"bytes"
	"embed"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed static
var staticFS embed.FS

// handoffHTTP passes a connection whose request is not a WebSocket upgrade
// (the web page, /healthz, /metrics, an oversized head) to the net/http
// server, with the bytes already read put back in front. It runs in the
// connection's Desc callback.
func (c *Conn) handoffHTTP(buf []byte) {
	s := c.srv
	prefix := append([]byte(nil), buf...)
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	s.wheel.remove(c)
	c.releaseHandshakeBuf()
	c.state.Store(stateClosed)
	fd, err := c.d.Detach()
	s.live.Add(-1)
	if err != nil {
		return
	}
	// net.FileConn dups the descriptor for Go's own poller; the original is
	// closed at once, so the connection still costs one fd.
	f := os.NewFile(uintptr(fd), "http")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.logLimited("handing a connection to net/http failed", "err", err)
		return
	}
	s.stats.HTTPHandoffs.Add(1)
	s.httpLn.deliver(&prefixConn{Conn: nc, prefix: prefix})
}

// prefixConn replays bytes already read before reading from the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// memListener is an in-memory net.Listener: connections arrive by deliver.
type memListener struct {
	shed   atomic.Uint64
	ch     chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newMemListener() *memListener {
	return &memListener{ch: make(chan net.Conn, 1024), done: make(chan struct{})}
}

func (l *memListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	default:
		// net/http has stopped accepting: shed load rather than block a
		// worker. Counted in chatd_http_shed_total.
		l.shed.Add(1)
		c.Close()
	}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "in-memory" }

// httpHandler serves everything on the port that is not a WebSocket.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	page, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		panic(err) // embedded at build time
	}
	servePage := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			http.ServeContent(w, r, "index.html", startTime, bytes.NewReader(body))
		}
	}
	app, err := staticFS.ReadFile("static/app.html")
	if err != nil {
		panic(err)
	}
	// / is the Pusher chat app; /raw keeps the seed's raw /chat demo.
	mux.HandleFunc("GET /{$}", servePage(app))
	mux.HandleFunc("GET /raw", servePage(page))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.writeMetrics(w)
	})
	upgradeRequired := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "this endpoint speaks WebSocket only", http.StatusUpgradeRequired)
	}
	// Pusher: the HTTP API (signed) and the demo app's auth/publish helper.
	mux.Handle("/apps/", s.pusherAPI.APIHandler())
	mux.Handle("/pusher/", s.pusherAPI.DemoHandler())
	mux.HandleFunc("/app/", upgradeRequired)
	mux.HandleFunc("/chat", upgradeRequired)
	mux.HandleFunc("/chat/", upgradeRequired)
	return mux
}

var startTime = time.Now()
