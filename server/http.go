package server

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed static
var staticFS embed.FS

// httpConn is a connection handed to net/http: it replays the bytes
// already read before reading from the socket, and is counted until
// closed.
type httpConn struct {
	net.Conn
	prefix []byte
	srv    *Server
	closed atomic.Bool
}

func (p *httpConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func (p *httpConn) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	p.srv.httpClosed()
	return p.Conn.Close()
}

// upgradeKeptAlive takes a WebSocket upgrade that arrived on a kept-alive
// plain HTTP connection back from net/http: the socket goes back to the
// poller (one fd: ours is a dup, net/http's is closed), and the request is
// handled as if it had been the connection's first.
func (s *Server) upgradeKeptAlive(w http.ResponseWriter, r *http.Request) bool {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return false
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return false
	}
	defer nc.Close()
	hc, ok := nc.(*httpConn)
	if !ok {
		return true
	}
	// The request as it came, for ws.Upgrader; net/http keeps Host apart.
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Host)
	r.Header.Write(&head)
	head.WriteString("\r\n")
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		head.Write(b)
	}
	head.Write(hc.prefix)
	rc, err := hc.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return true
	}
	fd := -1
	rc.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil || fd < 0 {
		s.logLimited("taking an upgrade back from net/http failed", "err", err)
		return true
	}
	s.adopt(fd, head.Bytes())
	return true
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		if hasToken([]byte(v), token) {
			return true
		}
	}
	return false
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

func (memAddr) String() string { return "in-memory" }

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
	recovery, err := staticFS.ReadFile("static/js/chatd-recovery.js")
	if err != nil {
		panic(err)
	}
	// The recovery plugin for pusher-js and Laravel Echo (pusher/history.go).
	mux.HandleFunc("GET /js/chatd-recovery.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		http.ServeContent(w, r, "chatd-recovery.js", startTime, bytes.NewReader(recovery))
	})
	// / is the Pusher chat app; /raw keeps the seed's raw /chat demo.
	mux.HandleFunc("GET /{$}", servePage(app))
	mux.HandleFunc("GET /raw", servePage(page))
	// Fresh connections get /healthz answered before net/http (answerHealthz);
	// this serves it on kept-alive ones.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, healthzBody)
	})
	upgradeRequired := func(w http.ResponseWriter, r *http.Request) {
		if s.upgradeKeptAlive(w, r) {
			return
		}
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "this endpoint speaks WebSocket only", http.StatusUpgradeRequired)
	}
	// Pusher: the HTTP API (signed) and the demo app's auth/publish helper.
	mux.Handle("/apps/", s.pusher.APIHandler())
	mux.Handle("/pusher/", s.pusher.DemoHandler())
	mux.HandleFunc("/app/", upgradeRequired)
	mux.HandleFunc("/chat", upgradeRequired)
	mux.HandleFunc("/chat/", upgradeRequired)
	return mux
}

var startTime = time.Now()
