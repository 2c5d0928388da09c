package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chatd/server"
	"chatd/server/broker"
	"chatd/server/history"
	"chatd/server/pusher"
)

var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// byteSize is a flag value in bytes that also takes KiB/MiB suffixes.
type byteSize struct{ p *int }

func (b byteSize) String() string {
	if b.p == nil {
		return ""
	}
	return strconv.Itoa(*b.p)
}

func (b byteSize) Set(s string) error {
	mult := 1
	t := strings.TrimSpace(s)
	for _, suf := range []struct {
		s string
		m int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"k", 1 << 10}} {
		if strings.HasSuffix(t, suf.s) {
			mult, t = suf.m, strings.TrimSuffix(t, suf.s)
			break
		}
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 || n > math.MaxInt32/mult {
		return fmt.Errorf("want a byte count like 65536 or 64KiB (at most 2 GiB)")
	}
	*b.p = n * mult
	return nil
}

// commaList is a comma-separated list flag.
type commaList struct{ p *[]string }

func (o commaList) String() string {
	if o.p == nil {
		return ""
	}
	return strings.Join(*o.p, ",")
}

func (o commaList) Set(s string) error {
	*o.p = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*o.p = append(*o.p, v)
		}
	}
	return nil
}

// prefixList is a comma-separated list of networks (CIDRs; a bare address
// is a network of one).
type prefixList struct{ p *[]netip.Prefix }

func (o prefixList) String() string {
	if o.p == nil {
		return ""
	}
	var s []string
	for _, p := range *o.p {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func (o prefixList) Set(s string) error {
	*o.p = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR like 10.0.0.0/8 or an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*o.p = append(*o.p, p.Masked())
	}
	return nil
}

// DefaultAdminAddr is where the admin listener (metrics, pprof, health and
// readiness) listens unless -admin-addr says otherwise: loopback only. Not
// 9090 (Prometheus's own port), nor in the ranges Prometheus and its
// exporters are allocated (9090-9999, and above 10000 for new exporters),
// nor a port common tools or chatd's peers use by default (README, "The
// admin port"). When it is taken, chatd serves without an admin listener
// (server.Config.AdminAddrDefault); an -admin-addr given that is taken is
// an error.
const DefaultAdminAddr = "127.0.0.1:7090"

type options struct {
	cfg        server.Config
	logLevel   string
	app        pusher.App
	appsFile   string
	webhookURL string

	historySize     int // -history-size: 0 is off (Config.HistorySize -1)
	historyMaxBytes int

	rawAuthKeyFile string
	hookFail       string
}

// parseConfig turns flags and CHATD_* environment variables into a
// server.Config. Flags win over the environment.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (server.Config, error) {
	var o options
	c := &o.cfg
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Addr, "addr", server.DefaultAddr, "listen address")
	fs.BoolVar(&c.ReusePort, "reuse-port", false, "share -addr with other chatd processes started with -reuse-port (SO_REUSEPORT): the kernel spreads new connections over them")
	fs.StringVar(&c.Poller, "poller", "", "readiness engine: epoll (Linux only) or netpoll (easygo: epoll on Linux, kqueue on macOS/BSD) (empty: epoll on Linux, netpoll elsewhere)")
	fs.IntVar(&c.Workers, "workers", 0, "worker goroutines (0: one per CPU)")
	fs.IntVar(&c.GCPercent, "gc-percent", 0, "garbage collector target: the heap may grow this many percent over what the last collection kept (0: 25; ignored when GOGC is set in the environment, which then rules)")
	c.MaxMessage = server.DefaultMaxMessage
	fs.Var(byteSize{&c.MaxMessage}, "max-message", "largest client message in bytes; larger closes with 1009 (0: the default)")
	c.WriteQueue = server.DefaultWriteQueue
	fs.Var(byteSize{&c.WriteQueue}, "write-queue", "bytes queued for one connection before it is closed as a slow consumer (1008) (0: the default)")
	fs.DurationVar(&c.PingInterval, "ping-interval", server.DefaultPingInterval, "ping a connection silent this long")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", server.DefaultIdleTimeout, "close a connection silent this long (must exceed -ping-interval)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", server.DefaultHandshakeTimeout, "time allowed for the HTTP request head (plain HTTP: the whole request, and idle keep-alive)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", server.DefaultDrainTimeout, "on SIGTERM, time queued messages may take to go out before the close frame")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "WebSocket connection cap, over it HTTP 503 (0: open-file limit minus a reserve)")
	fs.IntVar(&c.MaxHTTPConns, "max-http-conns", server.DefaultMaxHTTPConns, "plain HTTP connections (pages, Pusher HTTP API) held at once; over it HTTP 503 (/healthz is always answered)")
	fs.Var(commaList{&c.AllowedOrigins}, "allowed-origins", "comma-separated Origin values allowed to upgrade (empty: any)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.app.ID, "app-id", "", "Pusher app ID (with -app-key and -app-secret: serve this one app instead of the default app)")
	fs.StringVar(&o.app.Key, "app-key", "", "Pusher app key (clients connect to /app/{key})")
	fs.StringVar(&o.app.Secret, "app-secret", "", "Pusher app secret (signs channel auth and HTTP API requests)")
	fs.BoolVar(&o.app.ClientEvents, "app-client-events", false, "let the -app-id app's private/presence subscribers send client-* events")
	fs.StringVar(&o.webhookURL, "app-webhook-url", "", "post the Pusher app's webhook events (all types) to this URL, signed with its secret (the -app-id app, else the default app)")
	fs.StringVar(&o.appsFile, "apps-file", "", "JSON file of several Pusher apps (instead of the -app-* flags)")
	fs.Var(commaList{&c.Cluster.NATS}, "nats", "comma-separated NATS URLs (nats://host:4222): join the chatd cluster that meets there (empty: one node)")
	fs.StringVar(&c.Cluster.NodeID, "node-id", "", "this node's name in logs and in NATS (empty: random, logged at start)")
	fs.DurationVar(&c.Cluster.NodeTimeout, "node-timeout", broker.DefaultNodeTimeout, "with -nats: how long a node may go unheard (killed) before the cluster removes its Pusher presence")
	fs.StringVar(&c.AdminAddr, "admin-addr", DefaultAdminAddr, "admin listener for operators: /metrics, /debug/pprof/, /healthz, /readyz (empty or \"off\": none; port 0: any free port, logged at start). The default, when taken, is skipped with a warning; an address given that is taken is an error")
	version := fs.Bool("version", false, "print the build (module version, VCS revision and time, dirty flag, Go version) and exit")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving this long with /readyz answering 503 before closing connections, so a load balancer stops sending first")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "WebSocket connections allowed from one client address; over it HTTP 429 (0: no cap)")
	fs.IntVar(&c.MaxMessageRate, "max-message-rate", 0, "messages per second one raw /chat connection may send on average; over it the connection is closed with 1008 \"rate limit\" (0: no cap)")
	fs.IntVar(&c.MaxMessageBurst, "max-message-burst", 0, "messages a raw /chat connection may send at once above -max-message-rate (0: one second's worth)")
	fs.Var(prefixList{&c.TrustedProxies}, "trusted-proxies", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For / X-Real-IP name the client (logs, -max-conns-per-ip); empty: trust none")
	fs.IntVar(&o.historySize, "history-size", history.DefaultSize, "messages each raw room and Pusher channel keeps for late joiners and recovery (0: history off; an apps file's history_size wins per app)")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", history.DefaultTTL, "no kept message is older than this (an apps file's history_ttl_seconds wins per app)")
	o.historyMaxBytes = history.DefaultMaxBytes
	fs.Var(byteSize{&o.historyMaxBytes}, "history-max-bytes", "all rooms' history together; past it the least recently published room is forgotten")
	fs.IntVar(&c.HistoryReplicas, "history-replicas", 1, "with -nats: copies of the history stream in a JetStream cluster")
	fs.StringVar(&c.RawAuthSecret, "raw-auth-secret", "", "raw /chat rooms need ?token=<JWT> signed HS256 with this secret, naming sub, rooms and exp (empty: raw rooms are open)")
	fs.StringVar(&o.rawAuthKeyFile, "raw-auth-public-key", "", "PEM file of an RSA or ECDSA P-256 public key: raw tokens are RS256/ES256 (instead of -raw-auth-secret)")
	fs.IntVar(&c.MaxConnsPerUser, "max-conns-per-user", 0, "raw connections one token user (sub) may hold; over it HTTP 429 (0: no cap)")
	fs.StringVar(&c.PublishHook.URL, "publish-hook-url", "", "POST every raw room message (and the -app-* app's client events) here before fan-out: allow, replace or reject (empty: off)")
	fs.DurationVar(&c.PublishHook.Timeout, "publish-hook-timeout", 500*time.Millisecond, "time the publish hook may take to answer")
	fs.StringVar(&o.hookFail, "publish-hook-fail", "open", "on a publish hook timeout, error or unknown answer: open (publish the message) or closed (drop it)")
	fs.IntVar(&c.PublishHook.Concurrency, "publish-hook-concurrency", 64, "publish hook POSTs in flight at once")
	fs.IntVar(&c.PublishHook.Queue, "publish-hook-queue", 10000, "messages waiting for a publish hook POST; over it they are decided by -publish-hook-fail at once")

	usage := func() {
		fmt.Fprintf(stderr, "Usage: chatd [flags]\n\nA WebSocket chat server: ws://HOST/chat is the lobby, ws://HOST/chat/{room} a room,\nws://HOST/app/{key}?protocol=7 speaks Pusher Channels (default app: id chatd, key chatd-key,\nsecret chatd-secret, client events on).\nEvery flag but -version can also be set as CHATD_<NAME> (e.g. CHATD_MAX_MESSAGE); flags win.\n\nFlags:\n")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	var envErr error
	adminExplicit := false
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // an environment that happens to have CHATD_VERSION must not stop chatd
		}
		name := "CHATD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			adminExplicit = adminExplicit || f.Name == "admin-addr"
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s (flag -%s): %v", v, name, f.Name, err)
			}
		}
	})
	if envErr != nil {
		return *c, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return *c, errHelp
		}
		return *c, err
	}
	if fs.NArg() > 0 {
		return *c, fmt.Errorf("unexpected argument %q (see chatd -h)", fs.Arg(0))
	}
	if *version {
		return *c, errVersion
	}
	fs.Visit(func(f *flag.Flag) { adminExplicit = adminExplicit || f.Name == "admin-addr" })
	// The default admin address is skipped when taken; one the operator
	// gave is not.
	c.AdminAddrDefault = !adminExplicit
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return *c, fmt.Errorf("invalid value %q for flag -log-level: want debug, info, warn or error", o.logLevel)
	}
	if c.AdminAddr == "off" {
		c.AdminAddr = ""
	}
	switch {
	case o.historySize < 0:
		return *c, fmt.Errorf("invalid value %d for flag -history-size: want 0 (off) or more messages", o.historySize)
	case o.historySize == 0:
		c.HistorySize = -1
	default:
		c.HistorySize = o.historySize
	}
	if c.HistoryTTL <= 0 {
		return *c, fmt.Errorf("invalid value %v for flag -history-ttl: want a positive duration like 10m (-history-size 0 turns history off)", c.HistoryTTL)
	}
	if o.historyMaxBytes <= 0 {
		return *c, fmt.Errorf("invalid value %d for flag -history-max-bytes: want a positive byte count like 64MiB", o.historyMaxBytes)
	}
	c.HistoryMaxBytes = int64(o.historyMaxBytes)
	switch o.hookFail {
	case "open":
	case "closed":
		c.PublishHook.FailClosed = true
	default:
		return *c, fmt.Errorf("invalid value %q for flag -publish-hook-fail: want open or closed", o.hookFail)
	}
	if c.PublishHook.Timeout <= 0 || c.PublishHook.Concurrency <= 0 || c.PublishHook.Queue <= 0 {
		return *c, fmt.Errorf("invalid -publish-hook-timeout, -publish-hook-concurrency or -publish-hook-queue: want positive values")
	}
	if o.rawAuthKeyFile != "" {
		b, err := os.ReadFile(o.rawAuthKeyFile)
		if err != nil {
			return *c, fmt.Errorf("flag -raw-auth-public-key: %v", err)
		}
		c.RawAuthPublicKey = b
	}
	c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := validate(c); err != nil {
		return *c, err
	}
	if o.webhookURL != "" {
		o.app.Webhooks = []pusher.Webhook{{URL: o.webhookURL}}
	}
	if o.appsFile == "" {
		// The flags' app (or the default app) asks the same hook about
		// its client events; an apps file says per app (publish_hook_url).
		o.app.PublishHook = c.PublishHook
	}
	apps, err := pusher.LoadApps(o.appsFile, o.app)
	if err != nil {
		return *c, fmt.Errorf("invalid Pusher app (flags -app-id, -app-key, -app-secret, -app-webhook-url, -apps-file): %v", err)
	}
	c.Apps = apps
	return *c, nil
}

// configFlags maps server.Config fields to the flags that set them.
var configFlags = map[string]string{
	"Poller": "poller", "ReusePort": "reuse-port", "Workers": "workers", "GCPercent": "gc-percent", "MaxMessage": "max-message", "WriteQueue": "write-queue",
	"PingInterval": "ping-interval", "IdleTimeout": "idle-timeout",
	"HandshakeTimeout": "handshake-timeout", "DrainTimeout": "drain-timeout",
	"MaxConns": "max-conns", "MaxHTTPConns": "max-http-conns", "AllowedOrigins": "allowed-origins",
	"Cluster.NATS": "nats", "Cluster.NodeTimeout": "node-timeout", "ShutdownDelay": "shutdown-delay", "MaxConnsPerIP": "max-conns-per-ip",
	"MaxMessageRate": "max-message-rate", "MaxMessageBurst": "max-message-burst", "TrustedProxies": "trusted-proxies", "HistoryReplicas": "history-replicas",
	"MaxConnsPerUser": "max-conns-per-user", "RawAuthSecret": "raw-auth-secret", "RawAuthPublicKey": "raw-auth-public-key", "PublishHook": "publish-hook-url",
}

// validate checks c with server.Config.Validate, the one set of rules, and
// names the flag behind a bad value. As in Config, zero means the default.
func validate(c *server.Config) error {
	err := c.Validate()
	var ce *server.ConfigError
	if errors.As(err, &ce) {
		if f, ok := configFlags[ce.Field]; ok {
			return fmt.Errorf("invalid value for flag -%s: %s %s", f, ce.Field, ce.Reason)
		}
	}
	return err
}

func runServer(ctx context.Context, cfg server.Config) error {
	err := server.Run(ctx, cfg)
	if errors.Is(err, server.ErrAdminListen) && errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w (another process, perhaps another chatd, has -admin-addr's port: give each chatd its own -admin-addr, or -admin-addr off, or leave -admin-addr unset to serve without one when its default is taken)", err)
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		// The kernel shares an address only among sockets that all set
		// SO_REUSEPORT (and belong to one user): say which side is missing.
		if cfg.ReusePort {
			return fmt.Errorf("%w (another process listens there without -reuse-port, or as another user)", err)
		}
		return fmt.Errorf("%w (another process listens there; chatd processes share an address only when each runs with -reuse-port)", err)
	}
	return err
}
