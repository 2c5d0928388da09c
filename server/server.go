package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"chatd/poller"
	"chatd/server/broker"
	"chatd/server/buildinfo"
	"chatd/server/history"
	"chatd/server/pusher"

	"golang.org/x/sys/unix"
)

// Server is a chatd instance: one listener, one poller, one hub.
type Server struct {
	cfg    Config
	log    *slog.Logger
	poller *poller.Poller
	ln     *poller.Listener
	wheel  *wheel
	hub    *Hub
	broker broker.Broker // the cluster, or broker.Local on a single node
	// hist keeps rooms' recent messages (history.go); nil when nothing
	// keeps history. rawHist: the raw rooms' limits (Size 0: off).
	hist    *history.Store
	rawHist history.Limits
	kept    *clusterKept // history through the cluster's stream (cluster_history.go); nil otherwise

	// The protocols: what runs on /chat connections, what runs on
	// /app/{key} connections, and package pusher's protocol state with its
	// HTTP API, which the latter drives.
	rawProto    *rawProto
	pusherProto *pusherProto
	pusher      *pusher.Protocol

	httpSrv *http.Server
	httpLn  *memListener

	// The admin listener (admin.go), when Config.AdminAddr is set, and
	// the metrics it serves (metrics.go).
	adminSrv *http.Server
	adminLn  net.Listener
	metrics  metrics
	epoch    time.Time   // Server.since counts from here
	draining atomic.Bool // Shutdown has begun: /readyz answers 503

	perIP ipLimiter // connections per client address (Config.MaxConnsPerIP)
	// access is raw auth and the raw publish hook (rawauth.go); nil when off.
	access *rawAccess

	open      atomic.Int64 // upgraded WebSocket connections
	live      atomic.Int64 // sockets owned (handshaking, open, closing, or plain HTTP in net/http)
	httpConns atomic.Int64 // plain HTTP connections in net/http
	stats     Stats

	pingTicks, idleTicks, hsTicks int64

	startOnce sync.Once
	stopOnce  sync.Once
	lastWarn  atomic.Int64
}

// New checks cfg and builds a server; Start makes it listen.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, epoch: time.Now()}
	s.newMetrics()
	s.hub = newHub(s)
	s.rawProto = &rawProto{s: s}
	s.newHistory()
	pcfg := pusher.Config{Apps: cfg.Apps, Rooms: pusherRooms{s.hub}, Logger: cfg.Logger,
		HistorySize: cfg.HistorySize, HistoryTTL: cfg.HistoryTTL}
	if s.hist != nil {
		pcfg.History = pusherRooms{s.hub}
	}
	pp, err := pusher.New(pcfg)
	if err != nil {
		return nil, fmt.Errorf("server: pusher: %w", err)
	}
	s.pusher = pp
	s.pusherProto = &pusherProto{s: s, p: pp}
	s.newRawAccess()
	tick := min(cfg.PingInterval, cfg.HandshakeTimeout, closeLinger) / 8
	tick = max(10*time.Millisecond, min(tick, time.Second))
	s.wheel = newWheel(tick, 4096)
	s.pingTicks = s.wheel.ticks(cfg.PingInterval)
	s.idleTicks = s.wheel.ticks(cfg.IdleTimeout)
	s.hsTicks = s.wheel.ticks(cfg.HandshakeTimeout)
	s.httpLn = newMemListener()
	s.httpSrv = &http.Server{
		Handler: s.httpHandler(),
		// A plain HTTP request, head and body, must arrive within the
		// handshake timeout, its answer must be taken in as long, and a
		// kept-alive connection may sit idle that long: no socket state
		// without a timer.
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.HandshakeTimeout,
		WriteTimeout:      cfg.HandshakeTimeout,
		IdleTimeout:       cfg.HandshakeTimeout,
		// net/http allows MaxHeaderBytes plus 4 KiB of slack; this makes its
		// 431 fire where ours would (8 KiB).
		MaxHeaderBytes: maxHeaderBytes - 4096,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	// Last: nothing after it may fail and leave a connection behind.
	if s.broker, err = s.newBroker(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start opens the listener and starts serving. It returns once the server
// accepts connections.
func (s *Server) Start() error {
	var err error
	s.startOnce.Do(func() {
		s.poller, err = poller.New(poller.Config{Workers: s.cfg.Workers, Engine: s.cfg.Poller, Logger: s.log})
		if err != nil {
			return
		}
		s.ln, err = s.poller.Listen(s.cfg.Addr, s.accept, poller.ReusePort(s.cfg.ReusePort), poller.NoDelay(true))
		if err != nil {
			s.poller.Close()
			s.ln, s.poller = nil, nil
			return
		}
		if err = s.startAdmin(); err != nil {
			err = fmt.Errorf("%w on %s: %w", ErrAdminListen, s.cfg.AdminAddr, err)
			s.ln.Close()
			s.poller.Close()
			// Never started: Shutdown has nothing to stop (ErrClosed).
			s.ln, s.poller = nil, nil
			return
		}
		go s.wheel.run(s.onTimer)
		if s.hist != nil {
			s.hist.StartSweeper()
		}
		go s.httpSrv.Serve(s.httpLn)
		admin := "off"
		if a := s.AdminAddr(); a != nil {
			admin = a.String()
		}
		s.log.Info("chatd listening", append([]any{"addr", s.ln.Addr().String(), "admin", admin, "poller", s.poller.Engine(), "workers", s.poller.Workers(), "max_conns", s.cfg.MaxConns},
			buildinfo.Read().LogAttrs()...)...)
	})
	return err
}

// Addr returns the listening address (after Start).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Hub returns the server's room registry.
func (s *Server) Hub() *Hub { return s.hub }

// Stats returns the live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Conns returns the number of upgraded connections.
func (s *Server) Conns() int { return int(s.open.Load()) }

// Sockets returns the number of sockets the server owns.
func (s *Server) Sockets() int { return int(s.live.Load()) }

// accept runs on the epoll goroutine for each new socket.
func (s *Server) accept(fd int) {
	// Chat frames are small and latency matters more than packet count:
	// fd has TCP_NODELAY from the listener (poller.NoDelay), no syscall.
	c := &Conn{srv: s}
	if err := s.poller.Register(&c.d, fd, (*pollHandler)(c)); err != nil {
		s.logLimited("register failed", "err", err)
		unix.Close(fd)
		return
	}
	// Safe: events for fd are dispatched on this same goroutine, later.
	c.pingAt = s.since() // the handshake's start (Conn.pingAt)
	s.live.Add(1)
	now := s.wheel.now.Load()
	c.lastRead.Store(now)
	c.deadline.Store(now + s.hsTicks)
	s.wheel.schedule(c, now+s.hsTicks)
}

// adopt takes over a socket whose first bytes (buf) were read elsewhere: a
// WebSocket upgrade on a kept-alive connection that net/http had.
func (s *Server) adopt(fd int, buf []byte) {
	c := &Conn{srv: s}
	hb := hbufPool.Get().(*[]byte)
	*hb = append((*hb)[:0], buf...)
	c.hbuf = hb
	c.pingAt = s.since()
	s.live.Add(1)
	now := s.wheel.now.Load()
	c.lastRead.Store(now)
	c.deadline.Store(now + s.hsTicks)
	err := s.poller.Adopt(&c.d, fd, (*pollHandler)(c), func() {
		s.wheel.schedule(c, now+s.hsTicks)
	})
	if err != nil {
		s.logLimited("adopt failed", "err", err)
		s.wheel.remove(c)
		c.releaseHandshakeBuf()
		s.live.Add(-1)
		unix.Close(fd)
	}
}

// onTimer runs on the wheel goroutine when c's check is due.
func (s *Server) onTimer(c *Conn, now int64) {
	switch c.state.Load() {
	case stateHandshake:
		if now >= c.deadline.Load() {
			s.stats.HandshakesRejected.Add(1)
			c.requestFinal(ReasonHandshakeTimeout)
			return
		}
		s.wheel.schedule(c, c.deadline.Load())
	case stateOpen:
		pingTicks, idleTicks := c.proto.timeouts(c)
		last := c.lastRead.Load()
		idle := now - last
		if idle >= idleTicks {
			c.proto.idleClose(c)
			return
		}
		if idle >= pingTicks && c.pingAt <= last {
			c.pingAt = now
			c.proto.ping(c)
		}
		next := last + pingTicks
		if next <= now {
			next = min(last+idleTicks, now+pingTicks)
		}
		s.wheel.schedule(c, next)
	case stateClosing, stateCut, stateFinal:
		c.closingTimer(now)
	}
}

// connClosed is called once per socket from finalize.
func (s *Server) connClosed(c *Conn, why CloseReason) {
	s.live.Add(-1)
	if c.proto != nil {
		s.open.Add(-1)
	}
	if c.ip != nil {
		s.perIP.release(c.ip)
		c.ip = nil
	}
	s.stats.Closed[why].Add(1)
}

// logLimited logs a warning at most once a second: per-connection warnings
// must not flood the log under attack.
func (s *Server) logLimited(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, args...)
}

// Shutdown stops accepting, sends every connection a close frame (1001, or
// the protocol's own code), waits until they are gone or the drain timeout
// (or ctx) ends, then closes whatever is left and stops the engine.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.poller == nil {
		return ErrClosed
	}
	err := ErrClosed
	s.stopOnce.Do(func() {
		err = nil
		// Not ready from now on (/readyz: 503), before anything else, so a
		// load balancer stops sending new clients; during ShutdownDelay
		// the server still serves as before, for the load balancer to
		// notice.
		s.draining.Store(true)
		if d := s.cfg.ShutdownDelay; d > 0 {
			s.log.Info("not ready; closing connections after the shutdown delay", "delay", d)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		// The listener goes first, so the kernel sends new connections to
		// the other processes on the port (-reuse-port). A connection that
		// was accepted, or is in its handshake, is served to its end: it is
		// upgraded, then gets the close below (the loop repeats until the
		// drain ends), rather than a reset or a 503.
		s.ln.Close()
		// A cluster node's Pusher presence goes now, not as its
		// connections close one by one: the other nodes' subscribers see
		// member_removed within a second.
		withdrawn := make(chan struct{})
		if nb, ok := s.broker.(*broker.NATS); ok {
			go func() { nb.Withdraw(); close(withdrawn) }()
		} else {
			close(withdrawn)
		}
		// net/http closes its idle keep-alive connections now and lets the
		// requests under way finish (each bounded by its timeouts), while
		// the WebSocket connections drain.
		httpDone := make(chan struct{})
		go func() {
			defer close(httpDone)
			hctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+time.Second)
			defer cancel()
			if e := s.httpSrv.Shutdown(hctx); e != nil {
				s.httpSrv.Close()
			}
		}()
		// Queued messages keep flowing until they are written or the drain
		// timeout ends; the close frame follows them, or, at the end, goes
		// out ahead of what is left (hurryClose).
		drainTicks := s.wheel.ticks(s.cfg.DrainTimeout) + s.wheel.ticks(closeLinger)
		closeAll := func() {
			s.wheel.each(func(c *Conn) {
				if c.state.Load() == stateOpen {
					c.closeWithin(c.proto.shutdownCode(), "server shutting down", ReasonShutdown, drainTicks)
				}
			})
		}
		closeAll()
		deadline := time.NewTimer(s.cfg.DrainTimeout)
		defer deadline.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	wait:
		for s.live.Load() > 0 {
			select {
			case <-ctx.Done():
				err = ctx.Err()
				break wait
			case <-deadline.C:
				break wait
			case <-tick.C:
				closeAll() // connections that raced with the first pass
			}
		}
		if s.live.Load() > 0 {
			s.wheel.each(func(c *Conn) { c.hurryClose() })
			for i := 0; i < 100 && s.live.Load() > 0; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if s.live.Load() > 0 {
			s.wheel.each(func(c *Conn) { c.requestFinal(ReasonShutdown) })
			for i := 0; i < 100 && s.live.Load() > 0; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		// The connections are gone, their channel_vacated and
		// member_removed queued: pending webhooks get a drain timeout more.
		<-withdrawn // its member_removed webhooks are queued (a second at most)
		wctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
		s.pusher.Shutdown(wctx)
		cancel()
		if s.access != nil {
			s.access.close()
		}
		s.pusher.ClosePublishHooks()
		s.wheel.close()
		<-httpDone
		s.broker.Close()
		s.poller.Close()
		if s.hist != nil {
			s.hist.Close()
		}
		if s.adminSrv != nil {
			// Last: /readyz answered 503 until the end.
			s.adminSrv.Close()
		}
	})
	return err
}

// Run starts a server with cfg and serves until ctx ends, then shuts down
// gracefully.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(s.cfg.GCPercent)
	}
	if err := s.Start(); err != nil {
		if errors.Is(err, ErrAdminListen) {
			return err
		}
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Addr, err)
	}
	<-ctx.Done()
	s.log.Info("shutting down", "connections", s.open.Load())
	if err := s.Shutdown(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}
