package pusher

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"chatd/server/history"
)

// PongTimeout is how long the engine waits for any message after it sent a
// ping (Session.Ping) to a silent connection before it closes it with
// CodePongTimeout (4201). The protocol reference recommends 30 s.
const PongTimeout = 30 * time.Second

// Config configures a Protocol.
type Config struct {
	// Apps are the configured apps; nil means the default app alone.
	Apps *Apps
	// Rooms is the engine's room registry. Required.
	Rooms Rooms
	// Logger receives debug records of refused connections, subscriptions
	// and HTTP API requests, and of protocol errors; nil means no logging.
	Logger *slog.Logger
	// Now is the clock (rate limits, cache TTL, HTTP API timestamps);
	// nil means time.Now. Tests set it.
	Now func() time.Time
	// History is the engine's history of rooms (history.go); nil means no
	// app keeps history. HistorySize and HistoryTTL are the defaults of
	// App.HistorySize and App.HistoryTTL: zero means
	// history.DefaultSize and DefaultTTL, negative size off.
	History     HistoryRooms
	HistorySize int
	HistoryTTL  time.Duration
}

// Validate reports whether the config can be used.
func (c *Config) Validate() error {
	if c.Rooms == nil {
		return ErrNoRooms
	}
	return nil
}

// Protocol is the Pusher Channels protocol 7 for every configured app. The
// engine calls Open for each WebSocket connection on /app/{key} and then the
// returned Session's methods; APIHandler and DemoHandler are its HTTP side.
type Protocol struct {
	apps     *Apps
	rooms    Rooms
	log      *slog.Logger
	now      func() time.Time
	epoch    time.Time
	states   map[string]*appState // by app ID
	demo     demoLimiter          // the demo endpoints' rate limit
	apiCount apiCounters          // HTTP API requests by app, endpoint, status

	webhooks *webhookRuntime // webhook senders and the subscription count sweep

	cluster Cluster // nil: a single node (SetCluster)
	node    string  // this node's ID in the cluster

	hist           HistoryRooms // nil: no history (history.go)
	histSize       int
	histTTL        time.Duration
	recoveryFailed atomic.Uint64 // subscriptions whose recovery request could not be honoured
}

// New returns a Protocol for cfg.
func New(cfg Config) (*Protocol, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Protocol{apps: cfg.Apps, rooms: cfg.Rooms, log: cfg.Logger, now: cfg.Now,
		hist: cfg.History, histSize: cfg.HistorySize, histTTL: cfg.HistoryTTL}
	if p.histSize == 0 {
		p.histSize = history.DefaultSize
	}
	if p.histTTL <= 0 {
		p.histTTL = history.DefaultTTL
	}
	if p.apps == nil {
		apps, err := NewApps()
		if err != nil {
			return nil, err
		}
		p.apps = apps
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.epoch = p.now()
	p.states = make(map[string]*appState, len(p.apps.list))
	p.webhooks = newWebhookRuntime()
	for _, app := range p.apps.list {
		st := newAppState(p, app)
		if st.hooks = newAppHooks(st, p.webhooks); st.hooks != nil {
			p.webhooks.hooks = append(p.webhooks.hooks, st.hooks)
		}
		p.states[app.ID] = st
	}
	p.webhooks.start()
	return p, nil
}

// Stats are counters of a Protocol, for the engine's metrics.
type Stats struct {
	CacheChannels    int    // cache channels whose last event is remembered, all apps
	CacheBytes       int64  // their size, as counted against App.MaxCacheBytes
	CacheEvictions   uint64 // remembered events dropped to stay within MaxCacheChannels and MaxCacheBytes
	CacheExpirations uint64 // remembered events dropped after CacheTTL
	DemoRateLimited  uint64 // demo endpoint requests refused with 429

	WebhookPosts         uint64 // webhook POSTs answered 2xx
	WebhookEventsSent    uint64 // events in them
	WebhookRetries       uint64 // failed POSTs (error, timeout, not 2xx) tried again
	WebhookEventsDropped uint64 // events given up on: retried for App.WebhookRetryFor, or pending when Shutdown ended
	WebhookQueueOverflow uint64 // events not queued because their webhook's queue was full
	WebhookQueued        int    // events waiting in the queues now

	RecoveryFailed uint64 // subscriptions whose chatd_since or chatd_rewind could not be honoured
}

// Stats returns the current counters. Safe to call from any goroutine; it
// takes each app's lock briefly.
func (p *Protocol) Stats() Stats {
	var st Stats
	st.RecoveryFailed = p.recoveryFailed.Load()
	for _, a := range p.states {
		a.cacheStats(&st)
		a.hooks.stats(&st)
	}
	st.DemoRateLimited = p.demo.limited.Load()
	return st
}

// Check validates a connection request to /app/{appKey}: the app must
// exist (else CodeAppNotFound) and the protocol query parameter must be an
// integer (else CodeInvalidVersion) between MinProtocol and MaxProtocol
// (else CodeUnsupportedProtocol); a missing one is CodeNoProtocol. The
// error is a *RefusedError. Open calls Check; an engine may call it earlier.
func (p *Protocol) Check(appKey string, query url.Values) (*App, error) {
	app, ok := p.apps.ByKey(appKey)
	if !ok {
		return nil, &RefusedError{CodeAppNotFound, "Application does not exist"}
	}
	v := query.Get("protocol")
	if v == "" {
		return nil, &RefusedError{CodeNoProtocol, "No protocol version supplied"}
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, &RefusedError{CodeInvalidVersion, "Invalid version string format"}
	}
	if n < MinProtocol || n > MaxProtocol {
		return nil, &RefusedError{CodeUnsupportedProtocol, "Unsupported protocol version " + v +
			" (supported: " + strconv.Itoa(MinProtocol) + " to " + strconv.Itoa(MaxProtocol) + ")"}
	}
	return app, nil
}

// Open starts the protocol on a new connection to /app/{appKey} with the
// request's query. On success it sends pusher:connection_established and
// returns the Session. Otherwise it sends pusher:error, closes c with the
// code of the refusal (see Check) and returns nil; the engine then keeps no
// session and calls nothing more.
func (p *Protocol) Open(c Conn, appKey string, query url.Values) *Session {
	app, err := p.Check(appKey, query)
	if err != nil {
		refused := err.(*RefusedError)
		p.log.Debug("pusher: connection refused", "key", appKey, "code", refused.Code, "reason", refused.Reason)
		c.Send(encodeError(refused.Code, refused.Reason))
		c.Close(refused.Code, refused.Reason)
		return nil
	}
	st := p.states[app.ID]
	s := &Session{app: st, conn: c}
	for {
		s.socketID = newSocketID()
		if st.addSocket(s) {
			break
		}
	}
	st.counters.conns.Add(1)
	c.Send(encodeConnectionEstablished(s.socketID, app.ActivityTimeout))
	return s
}

// newSocketID returns an unguessable socket ID "N.M": two decimal numbers
// from 64 bits of crypto/rand.
func newSocketID() string {
	var r [8]byte
	rand.Read(r[:])
	b := make([]byte, 0, 21)
	b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(r[:4])), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(r[4:])), 10)
	return string(b)
}

// encodeConnectionEstablished returns pusher:connection_established with
// data {"socket_id":id,"activity_timeout":seconds} as a string.
func encodeConnectionEstablished(socketID string, activity time.Duration) []byte {
	d := make([]byte, 0, 64)
	d = append(d, `{"socket_id":`...)
	d = appendQuoted(d, socketID)
	d = append(d, `,"activity_timeout":`...)
	d = strconv.AppendInt(d, int64(activity/time.Second), 10)
	d = append(d, '}')
	return encodeEvent("pusher:connection_established", "", string(d), "")
}
