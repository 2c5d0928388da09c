package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"chatd/poller"
	"chatd/server/history"
	"chatd/server/pubhook"
	"chatd/server/pusher"
)

// Defaults for zero Config fields.
const (
	DefaultAddr             = ":8080"
	DefaultMaxMessage       = 64 << 10
	MaxMaxMessage           = 1 << 30 // the largest MaxMessage accepted
	DefaultGCPercent        = 25
	DefaultWriteQueue       = 256 << 10
	DefaultPingInterval     = 30 * time.Second
	DefaultIdleTimeout      = 90 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDrainTimeout     = 5 * time.Second
	DefaultMaxHTTPConns     = 64
	// fdReserve is kept free under the open-file limit for the listener,
	// epoll, handshakes in progress and plain HTTP requests.
	fdReserve = 100
	// maxHeaderBytes caps an HTTP request head (request line + headers).
	maxHeaderBytes = 8 << 10
	// maxMessageRate and maxMessageBurst bound the rate limit so that its
	// token bucket (thousandths of a token) fits in a uint32.
	maxMessageRate  = 1_000_000
	maxMessageBurst = 1_000_000
)

// Errors returned by New and Config.Validate.
var (
	ErrBadConfig = errors.New("server: invalid config")
	ErrClosed    = errors.New("server: closed")
	// ErrAdminListen wraps the error of opening Config.AdminAddr.
	ErrAdminListen = errors.New("server: admin listener")
)

// Config configures a Server. The zero value is a working server on :8080:
// every zero field means the default documented on it.
type Config struct {
	// Addr is the TCP listen address. Zero means ":8080".
	Addr string
	// ReusePort sets SO_REUSEPORT on the listening socket, so that several
	// chatd processes of one user share Addr on one host and the kernel
	// spreads new connections over them (for more cores per port, and for
	// restarts without downtime: start the new process, then SIGTERM the
	// old one). Every process on Addr must set it. Zero (false) means an
	// exclusive listener: a second one on Addr fails with "address already
	// in use".
	ReusePort bool
	// Poller is the readiness engine (package poller): "epoll" (Linux
	// only) or "netpoll" (easygo's netpoll: epoll on Linux, kqueue on
	// macOS and the BSDs). Empty means poller.DefaultEngine(): epoll on
	// Linux, netpoll elsewhere.
	Poller string
	// Workers is the size of the worker pool. Zero means GOMAXPROCS.
	Workers int
	// GCPercent is the garbage collector's growth target that Run sets for
	// the process (runtime/debug.SetGCPercent): the heap may grow this many
	// percent over what the last collection kept before the next one. Zero
	// means DefaultGCPercent (25); when the process was started with GOGC
	// in its environment, Run leaves the runtime's setting (GOGC's) alone.
	// New does not touch it (several servers may share a process).
	//
	// Why not Go's 100: an idle connection's state is long-lived heap, and
	// with 100 the process keeps about as much again in collected-but-kept
	// pages, which is most of its memory per connection; the fan-out
	// allocates nothing per delivery, so collecting more often costs next
	// to no CPU per message (bench/RESULTS.md, issue 11).
	GCPercent int
	// MaxMessage is the largest message (bytes, all fragments) a client may
	// send; larger ones close the connection with 1009. Zero means 64 KiB.
	MaxMessage int
	// WriteQueue is how many bytes may wait for one slow connection before
	// it is closed with 1008 "slow consumer". Zero means 256 KiB.
	WriteQueue int
	// PingInterval: a connection silent this long is pinged. Zero: 30s.
	PingInterval time.Duration
	// IdleTimeout: a connection silent this long is closed (1001). Zero: 90s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the time from accept to a complete HTTP
	// request head. Zero means 10s.
	HandshakeTimeout time.Duration
	// DrainTimeout bounds how long Shutdown waits for close frames to be
	// flushed. Zero means 5s.
	DrainTimeout time.Duration
	// MaxConns caps upgraded WebSocket connections; handshakes over it get
	// HTTP 503. Zero means the process's open-file limit minus a reserve.
	MaxConns int
	// MaxHTTPConns caps plain HTTP connections (the pages, the Pusher HTTP
	// API) held at once; a request over it gets 503 at once. GET /healthz
	// is answered without one, so it never waits behind them. Zero means
	// 64 (inside the open-file reserve that MaxConns leaves).
	MaxHTTPConns int
	// AllowedOrigins lists the Origin header values accepted on upgrade
	// (exact match, or "*"). Empty accepts any origin (the seed's page is
	// served cross-origin); a disallowed origin gets HTTP 403.
	AllowedOrigins []string
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Cluster joins this server to others through NATS; the zero value
	// is a single node, all in-process (see ClusterConfig).
	Cluster ClusterConfig
	// Apps are the Pusher Channels apps served on /app/{key} and
	// /apps/{id}/...; nil means pusher's documented default app.
	Apps *pusher.Apps

	// AdminAddr is the TCP address of the admin listener: /metrics
	// (Prometheus), /debug/pprof/, /healthz and /readyz, for operators
	// only. Empty means no admin listener (cmd/chatd's default is
	// 127.0.0.1:7090).
	AdminAddr string
	// AdminAddrDefault says AdminAddr is a default the operator did not
	// choose (cmd/chatd: neither -admin-addr nor CHATD_ADMIN_ADDR given):
	// if it cannot be listened on (another program, or another chatd on
	// the host, has it), Start logs one warning naming -admin-addr and
	// serves without an admin listener instead of failing with
	// ErrAdminListen.
	AdminAddrDefault bool
	// ShutdownDelay is how long Shutdown keeps serving with /readyz
	// answering 503 before it closes the listener and sends the close
	// frames, so a load balancer stops sending new clients first. Zero
	// means none.
	ShutdownDelay time.Duration
	// MaxConnsPerIP caps the WebSocket connections from one client
	// address (see TrustedProxies); handshakes over it get HTTP 429.
	// Zero means no cap: many users can share one NAT address, and load
	// tests come from loopback.
	MaxConnsPerIP int
	// MaxMessageRate caps the messages per second one raw /chat
	// connection may send, as a token bucket of MaxMessageBurst tokens
	// refilled at this rate; a connection over it is closed with 1008
	// "rate limit". Zero means no cap.
	MaxMessageRate int
	// MaxMessageBurst is the token bucket's size. Zero means
	// MaxMessageRate (one second's worth).
	MaxMessageBurst int
	// TrustedProxies are the networks of reverse proxies (nginx, a load
	// balancer) whose X-Forwarded-For / X-Real-IP headers name the
	// client: for a connection from one of them, the client address (in
	// logs and for MaxConnsPerIP) is the right-most X-Forwarded-For entry
	// that is not itself a trusted proxy, else X-Real-IP. From any other
	// peer those headers are ignored. Empty trusts nobody.
	TrustedProxies []netip.Prefix

	// HistorySize is how many messages each raw room (and, unless its
	// app says otherwise, each Pusher channel) keeps for late joiners and
	// recovery (package history). Zero means history.DefaultSize (100);
	// negative turns history off. In a cluster (Cluster.NATS) history is
	// off: positions must be the cluster's.
	HistorySize int
	// HistoryTTL: no kept message is older. Zero means 10 minutes.
	HistoryTTL time.Duration
	// HistoryMaxBytes bounds all rooms' history together; past it the
	// least recently published room is forgotten. Zero means 64 MiB.
	HistoryMaxBytes int64
	// HistoryReplicas is how many copies of the cluster's history stream
	// a JetStream cluster keeps (with Cluster.NATS). Zero means 1.
	HistoryReplicas int

	// RawAuthSecret turns on signed tokens for raw rooms (rawauth.go): a
	// /chat connection must carry ?token=<JWT>, HS256-signed with this
	// secret, naming its user (sub), the rooms it may join (rooms) and
	// its expiry (exp). Empty (with RawAuthPublicKey empty) means off:
	// raw rooms are open, as the seed's were.
	RawAuthSecret string
	// RawAuthPublicKey is a PEM RSA or ECDSA P-256 public key: tokens
	// are RS256 or ES256, signed with its private key. Instead of
	// RawAuthSecret, not with it.
	RawAuthPublicKey []byte
	// MaxConnsPerUser caps the raw connections of one token user (sub);
	// handshakes over it get HTTP 429. Zero means no cap.
	MaxConnsPerUser int
	// PublishHook, when its URL is set, asks a backend about every raw
	// room message before its fan-out (publishhook.go). Its Key and
	// Secret sign the POSTs; empty means the first Pusher app's.
	PublishHook pubhook.Config

	// testHookMessage, when set, is called for each raw message (tests
	// use it to inject a panic).
	testHookMessage func(payload []byte)
}

// testPoller is the engine a zero Config.Poller means in this package's
// tests: TestMain sets it from CHATD_POLLER, so the whole suite runs on
// either engine. Outside tests it is empty: the poller's default.
var testPoller string

// ConfigError is an invalid Config field. It wraps ErrBadConfig.
type ConfigError struct {
	Field  string // the Config field, e.g. "MaxMessage"
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s %s", ErrBadConfig, e.Field, e.Reason)
}

func (e *ConfigError) Unwrap() error { return ErrBadConfig }

// Validate reports the first invalid field as a *ConfigError. Zero is
// valid everywhere: it means the documented default.
func (c Config) Validate() error {
	bad := func(field string, v any) error {
		return &ConfigError{field, fmt.Sprintf("must not be negative (got %v)", v)}
	}
	switch {
	case c.Workers < 0:
		return bad("Workers", c.Workers)
	case c.GCPercent < 0:
		return bad("GCPercent", c.GCPercent)
	case c.MaxMessage < 0:
		return bad("MaxMessage", c.MaxMessage)
	case c.MaxMessage > MaxMaxMessage:
		// The decoder keeps the limit in an int32 (wsframe.Decoder).
		return &ConfigError{"MaxMessage", fmt.Sprintf("must be at most %d (got %d)", MaxMaxMessage, c.MaxMessage)}
	case c.WriteQueue < 0:
		return bad("WriteQueue", c.WriteQueue)
	case c.PingInterval < 0:
		return bad("PingInterval", c.PingInterval)
	case c.IdleTimeout < 0:
		return bad("IdleTimeout", c.IdleTimeout)
	case c.HandshakeTimeout < 0:
		return bad("HandshakeTimeout", c.HandshakeTimeout)
	case c.DrainTimeout < 0:
		return bad("DrainTimeout", c.DrainTimeout)
	case c.MaxConns < 0:
		return bad("MaxConns", c.MaxConns)
	case c.MaxHTTPConns < 0:
		return bad("MaxHTTPConns", c.MaxHTTPConns)
	case c.ShutdownDelay < 0:
		return bad("ShutdownDelay", c.ShutdownDelay)
	case c.MaxConnsPerIP < 0:
		return bad("MaxConnsPerIP", c.MaxConnsPerIP)
	case c.MaxMessageRate < 0:
		return bad("MaxMessageRate", c.MaxMessageRate)
	case c.MaxMessageBurst < 0:
		return bad("MaxMessageBurst", c.MaxMessageBurst)
	case c.MaxMessageRate > maxMessageRate:
		return &ConfigError{"MaxMessageRate", fmt.Sprintf("must be at most %d per second (got %d)", maxMessageRate, c.MaxMessageRate)}
	case c.HistoryTTL < 0:
		return bad("HistoryTTL", c.HistoryTTL)
	case c.HistoryMaxBytes < 0:
		return bad("HistoryMaxBytes", c.HistoryMaxBytes)
	case c.HistoryReplicas < 0:
		return bad("HistoryReplicas", c.HistoryReplicas)
	case c.MaxConnsPerUser < 0:
		return bad("MaxConnsPerUser", c.MaxConnsPerUser)
	case c.RawAuthSecret != "" && len(c.RawAuthPublicKey) > 0:
		return &ConfigError{"RawAuthSecret", "and RawAuthPublicKey are exclusive: tokens are HS256 or RS256/ES256, not both"}
	case c.MaxMessageBurst > maxMessageBurst:
		return &ConfigError{"MaxMessageBurst", fmt.Sprintf("must be at most %d (got %d)", maxMessageBurst, c.MaxMessageBurst)}
	}
	if len(c.RawAuthPublicKey) > 0 {
		if _, _, err := parsePublicKey(c.RawAuthPublicKey); err != nil {
			return &ConfigError{"RawAuthPublicKey", "is " + err.Error()}
		}
	}
	if c.PublishHook.URL != "" {
		if err := c.PublishHook.Validate(); err != nil {
			return &ConfigError{"PublishHook", strings.TrimPrefix(err.Error(), pubhook.ErrBadConfig.Error()+": ")}
		}
	}
	if err := poller.CheckEngine(c.Poller); err != nil {
		return &ConfigError{"Poller", strings.TrimPrefix(err.Error(), "poller: engine ")}
	}
	if c.ReusePort {
		if err := poller.CheckReusePort(); err != nil {
			return &ConfigError{"ReusePort", fmt.Sprintf("is not supported: %v", err)}
		}
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return &ConfigError{"TrustedProxies", "entry is not a network (want CIDRs like 10.0.0.0/8)"}
		}
	}
	for _, o := range c.AllowedOrigins {
		if o == "" || strings.ContainsAny(o, " \t\r\n,") {
			return &ConfigError{"AllowedOrigins", fmt.Sprintf("entry %q is not an origin", o)}
		}
	}
	if c.Cluster.NodeTimeout < 0 || c.Cluster.NodeTimeout > 0 && c.Cluster.NodeTimeout < 2*time.Second {
		return &ConfigError{"Cluster.NodeTimeout", "must be at least 2s (nodes say they are alive every second), or 0 for the default"}
	}
	for _, u := range c.Cluster.NATS {
		if p, err := url.Parse(u); u == "" || err != nil || p.Host == "" {
			return &ConfigError{"Cluster.NATS", fmt.Sprintf("entry %q is not a NATS URL like nats://host:4222", u)}
		}
	}
	d := c.withDefaults()
	if d.IdleTimeout <= d.PingInterval {
		return &ConfigError{"IdleTimeout", fmt.Sprintf("(%v) must be longer than PingInterval (%v)", d.IdleTimeout, d.PingInterval)}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Poller == "" {
		c.Poller = testPoller
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.GCPercent == 0 {
		c.GCPercent = DefaultGCPercent
	}
	if c.WriteQueue == 0 {
		c.WriteQueue = DefaultWriteQueue
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
		if c.IdleTimeout <= c.PingInterval {
			c.IdleTimeout = 3 * c.PingInterval
		}
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns()
	}
	if c.MaxHTTPConns == 0 {
		c.MaxHTTPConns = DefaultMaxHTTPConns
	}
	if c.HistorySize == 0 {
		c.HistorySize = history.DefaultSize
	}
	if c.HistoryTTL == 0 {
		c.HistoryTTL = history.DefaultTTL
	}
	if c.HistoryMaxBytes == 0 {
		c.HistoryMaxBytes = history.DefaultMaxBytes
	}
	if c.MaxMessageRate > 0 && c.MaxMessageBurst == 0 {
		c.MaxMessageBurst = c.MaxMessageRate
	}
	// Masked copies: the caller's slice stays as it was.
	c.TrustedProxies = slices.Clone(c.TrustedProxies)
	for i, p := range c.TrustedProxies {
		c.TrustedProxies[i] = p.Masked()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// DefaultMaxConns is the open-file limit (RLIMIT_NOFILE, soft) minus a
// reserve for the listener, epoll and handshakes in progress.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024 - fdReserve
	}
	cur := rl.Cur
	if cur > 1<<30 {
		cur = 1 << 30
	}
	n := int(cur) - fdReserve
	if n < 1 {
		n = 1
	}
	return n
}
