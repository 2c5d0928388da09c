package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/gobwas/ws"
)

// The HTTP side of a connection: collecting the request head, answering
// /healthz, the WebSocket upgrade, and the hand-off to net/http.

// Handshake buffers are pooled: a connection holds one only until its
// request head is complete.
var hbufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (c *Conn) releaseHandshakeBuf() {
	if c.hbuf != nil {
		b := (*c.hbuf)[:0]
		if cap(b) <= 16<<10 {
			*c.hbuf = b
			hbufPool.Put(c.hbuf)
		}
		c.hbuf = nil
	}
}

// handshakeData collects the HTTP request head as it trickles in; a worker
// never waits for it. Once complete, a WebSocket upgrade for a known path is
// parsed by ws.Upgrader straight from this buffer, GET /healthz is answered
// here, and anything else goes to net/http.
func (c *Conn) handshakeData(p []byte) {
	if c.hbuf == nil {
		c.hbuf = hbufPool.Get().(*[]byte)
	}
	old := len(*c.hbuf)
	*c.hbuf = append(*c.hbuf, p...)
	c.parseHead(old)
}

// parseHead looks for the end of the request head in the handshake buffer,
// from byte from on, and acts on each complete head.
func (c *Conn) parseHead(from int) {
	for {
		buf := *c.hbuf
		end := headEnd(buf, from)
		if end < 0 || end > maxHeaderBytes {
			if len(buf) > maxHeaderBytes {
				// net/http answers 431 for a head this size (its limit is set
				// to match ours); it gets the bytes read so far.
				c.handoffHTTP(buf)
			}
			return
		}
		head, rest := buf[:end], buf[end:]
		info := scanHead(head)
		switch {
		case info.upgrade:
			c.upgrade(crlfHead(head), rest, info)
			return
		case info.healthz:
			if !c.answerHealthz(head, info) {
				return
			}
			// Kept alive: the next request may be anything, an upgrade too.
			n := copy(buf, rest)
			*c.hbuf = buf[:n]
			from = 0
			now := c.srv.wheel.now.Load()
			c.deadline.Store(now + c.srv.hsTicks)
			c.srv.wheel.schedule(c, now+c.srv.hsTicks)
		default:
			c.handoffHTTP(buf)
			return
		}
	}
}

// answerHealthz answers GET /healthz on the connection itself, so that
// plain HTTP connections held by slow clients (capped at MaxHTTPConns) can
// never make a health check fail. It reports whether the connection stays
// open for another request.
func (c *Conn) answerHealthz(head []byte, info headInfo) (keep bool) {
	c.srv.stats.HealthzInline.Add(1)
	resp := healthzResponse
	if info.head {
		resp = resp[:len(resp)-len(healthzBody)]
	}
	c.wmu.Lock()
	if !c.mayQueueLocked() {
		c.wmu.Unlock()
		return false
	}
	// A client that does not read its answers gets no second one: at most
	// one response waits in the queue, then the connection is closed.
	keep = !info.close && len(c.outq) == 0
	c.writeLocked(resp)
	if !keep || len(c.outq) > 0 {
		c.startClosingLocked(ReasonHTTP, c.srv.wheel.ticks(closeLinger))
		keep = false
	}
	c.wmu.Unlock()
	if !keep {
		c.maybeFinish()
	}
	return keep
}

func (c *Conn) upgrade(head, rest []byte, info headInfo) {
	s := c.srv
	var rt route
	counted := false
	var ca clientAddr
	perIP := s.cfg.MaxConnsPerIP > 0
	if perIP || len(s.cfg.TrustedProxies) > 0 {
		ca.peer = peerAddr(c.d.Fd())
		ca.viaProxy = len(s.cfg.TrustedProxies) > 0 && s.trusted(ca.peer)
	}
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			var err error
			rt, err = s.route(string(uri))
			return err
		},
		OnHeader: func(k, v []byte) error {
			if len(s.cfg.AllowedOrigins) > 0 && bytes.EqualFold(k, []byte("Origin")) && !s.originAllowed(string(v)) {
				return reject(http.StatusForbidden, "origin not allowed")
			}
			ca.header(s, k, v)
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if info.badKey {
				return nil, reject(http.StatusBadRequest, "invalid Sec-WebSocket-Key")
			}
			if info.dupKey {
				return nil, reject(http.StatusBadRequest, "Sec-WebSocket-Key must appear once")
			}
			if n := s.open.Add(1); n > int64(s.cfg.MaxConns) {
				s.open.Add(-1)
				s.stats.RejectedMaxConns.Add(1)
				return nil, reject(http.StatusServiceUnavailable, "too many connections")
			}
			counted = true
			if perIP {
				ip, ok := s.perIP.acquire(ca.addr(), s.cfg.MaxConnsPerIP)
				if !ok {
					s.stats.RejectedPerIP.Add(1)
					s.logLimited("handshake refused: too many connections from one address", "client", ca.addr(), "peer", ca.peer, "max_conns_per_ip", s.cfg.MaxConnsPerIP)
					return nil, reject(http.StatusTooManyRequests, "too many connections from this address")
				}
				c.ip = ip
			}
			if rt.ident != nil {
				if err := s.access.acquire(rt.ident); err != nil {
					return nil, err
				}
			}
			return nil, nil
		},
	}
	var hio handshakeIO
	hio.r.Reset(head)
	_, err := u.Upgrade(&hio)
	if err != nil {
		if counted {
			s.open.Add(-1)
		}
		if c.ip != nil {
			s.perIP.release(c.ip)
			c.ip = nil
		}
		if rt.ident != nil {
			s.access.release(rt.ident)
		}
		s.stats.HandshakesRejected.Add(1)
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			if !ca.peer.IsValid() {
				ca.peer = peerAddr(c.d.Fd())
			}
			// The client's address, from a trusted proxy's forwarding
			// headers when it came through one (-trusted-proxies).
			s.log.Debug("handshake refused", "client", ca.addr(), "peer", ca.peer, "err", err)
		}
		c.rejectHTTP(hio.out, ReasonHandshakeRejected)
		return
	}
	// The handshake deadline no longer applies. The timer is armed again
	// below, after onOpen, so the wheel goroutine never sees a half-built
	// protocol state.
	s.wheel.remove(c)
	c.proto = rt.proto
	c.pusher = rt.pusher
	c.dec.MaxMessage = int32(s.cfg.MaxMessage) // ≤ MaxMaxMessage (Validate)
	s.stats.Upgraded.Add(1)
	s.observeHandshake(c.pingAt)
	// From here on pingAt is the wheel goroutine's (stateOpen).
	c.pingAt = 0
	// Join before the 101 is written, so a client that has its 101 is in
	// the room; anything fanned out meanwhile queues behind the response,
	// and it all goes out in one write below.
	c.wmu.Lock()
	c.outq = append(c.outq, hio.out)
	c.outBytes += len(hio.out)
	c.wmu.Unlock()
	c.proto.onOpen(c, rt)
	// onOpen may have refused the connection (Pusher: unknown key), which
	// leaves it closing with its linger timer set.
	if c.state.CompareAndSwap(stateHandshake, stateOpen) {
		ping, _ := c.proto.timeouts(c)
		s.wheel.schedule(c, s.wheel.now.Load()+ping)
	}
	c.wmu.Lock()
	if c.state.Load() != stateClosed {
		c.flushLocked()
	}
	c.wmu.Unlock()
	if len(rest) > 0 && c.state.Load() == stateOpen {
		// The client pipelined frames behind its request.
		c.feed(rest)
	}
	c.releaseHandshakeBuf()
}

// handoffHTTP passes a connection whose request is not a WebSocket upgrade
// (the web page, the HTTP API, an oversized head) to the net/http server,
// with the bytes already read put back in front. It runs in the
// connection's Desc callback. The socket stays counted in Sockets, and in
// the plain HTTP connections capped by Config.MaxHTTPConns, until net/http
// closes it; over the cap the request gets 503 here.
func (c *Conn) handoffHTTP(buf []byte) {
	s := c.srv
	if n := s.httpConns.Add(1); n > int64(s.cfg.MaxHTTPConns) {
		s.httpConns.Add(-1)
		s.stats.RejectedHTTPConns.Add(1)
		c.rejectHTTP(httpBusyResponse, ReasonHTTPRejected)
		return
	}
	prefix := append([]byte(nil), buf...)
	if !c.teardown() {
		s.httpConns.Add(-1)
		return
	}
	fd, err := c.d.Detach()
	if err != nil {
		s.httpClosed()
		return
	}
	// net.FileConn dups the descriptor for Go's own poller; the original is
	// closed at once, so the connection still costs one fd.
	f := os.NewFile(uintptr(fd), "http")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.logLimited("handing a connection to net/http failed", "err", err)
		s.httpClosed()
		return
	}
	s.stats.HTTPHandoffs.Add(1)
	s.httpLn.deliver(&httpConn{Conn: nc, prefix: prefix, srv: s})
}

var httpBusyResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 26\r\n\r\ntoo many HTTP connections\n")

// httpClosed forgets one plain HTTP connection.
func (s *Server) httpClosed() {
	s.httpConns.Add(-1)
	s.live.Add(-1)
	s.stats.Closed[ReasonHTTP].Add(1)
}
