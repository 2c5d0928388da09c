package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/poller"
	"chatd/server"

	"github.com/gorilla/websocket"
)

// allFlags is every flag chatd defines.
var allFlags = []string{
	"addr", "reuse-port", "poller", "workers", "gc-percent", "max-message", "write-queue", "ping-interval",
	"idle-timeout", "handshake-timeout", "drain-timeout", "max-conns", "max-http-conns",
	"allowed-origins", "log-level", "nats", "node-id", "admin-addr", "shutdown-delay",
	"max-conns-per-ip", "max-message-rate", "max-message-burst", "trusted-proxies", "node-timeout",
	"version",
}

// envMap returns a getenv func backed by m.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func noEnv(string) string { return "" }

func mustParse(t *testing.T, args []string, getenv func(string) string) server.Config {
	t.Helper()
	cfg, err := parseConfig(args, getenv, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", args, err)
	}
	return cfg
}

func TestChatdParseConfigDefaults(t *testing.T) {
	cfg := mustParse(t, nil, noEnv)
	if cfg.Addr != ":8080" {
		t.Errorf("Addr = %q, want :8080", cfg.Addr)
	}
	if cfg.MaxMessage != 64<<10 {
		t.Errorf("MaxMessage = %d, want %d (64 KiB)", cfg.MaxMessage, 64<<10)
	}
	if cfg.WriteQueue != 256<<10 {
		t.Errorf("WriteQueue = %d, want %d (256 KiB)", cfg.WriteQueue, 256<<10)
	}
	if cfg.ReusePort {
		t.Errorf("ReusePort = true, want false")
	}
	if cfg.Workers != 0 {
		t.Errorf("Workers = %d, want 0", cfg.Workers)
	}
	if cfg.MaxConns != 0 {
		t.Errorf("MaxConns = %d, want 0", cfg.MaxConns)
	}
	if cfg.PingInterval != server.DefaultPingInterval {
		t.Errorf("PingInterval = %v, want %v", cfg.PingInterval, server.DefaultPingInterval)
	}
	if cfg.IdleTimeout != server.DefaultIdleTimeout {
		t.Errorf("IdleTimeout = %v, want %v", cfg.IdleTimeout, server.DefaultIdleTimeout)
	}
	if cfg.HandshakeTimeout != server.DefaultHandshakeTimeout {
		t.Errorf("HandshakeTimeout = %v, want %v", cfg.HandshakeTimeout, server.DefaultHandshakeTimeout)
	}
	if cfg.DrainTimeout != server.DefaultDrainTimeout {
		t.Errorf("DrainTimeout = %v, want %v", cfg.DrainTimeout, server.DefaultDrainTimeout)
	}
	if len(cfg.AllowedOrigins) != 0 {
		t.Errorf("AllowedOrigins = %q, want none", cfg.AllowedOrigins)
	}
	if cfg.AdminAddr != "127.0.0.1:7090" || DefaultAdminAddr != "127.0.0.1:7090" {
		t.Errorf("AdminAddr = %q (DefaultAdminAddr %q), want 127.0.0.1:7090", cfg.AdminAddr, DefaultAdminAddr)
	}
	if !cfg.AdminAddrDefault {
		t.Errorf("AdminAddrDefault = false without -admin-addr: a taken default would stop chatd")
	}
	if cfg.ShutdownDelay != 0 || cfg.MaxConnsPerIP != 0 || cfg.MaxMessageRate != 0 || cfg.MaxMessageBurst != 0 || len(cfg.TrustedProxies) != 0 {
		t.Errorf("limits on by default: ShutdownDelay %v MaxConnsPerIP %d MaxMessageRate %d MaxMessageBurst %d TrustedProxies %v",
			cfg.ShutdownDelay, cfg.MaxConnsPerIP, cfg.MaxMessageRate, cfg.MaxMessageBurst, cfg.TrustedProxies)
	}
	if cfg.Logger == nil {
		t.Fatal("Logger is nil")
	}
	ctx := context.Background()
	if !cfg.Logger.Enabled(ctx, slog.LevelInfo) || cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		t.Errorf("default logger level is not info")
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("default config does not validate: %v", err)
	}
}

func TestChatdParseConfigEveryFlag(t *testing.T) {
	cfg := mustParse(t, []string{
		"-addr", "127.0.0.1:9000",
		"-reuse-port",
		"-workers", "3",
		"-gc-percent", "40",
		"-max-message", "1MiB",
		"-write-queue", "512K",
		"-ping-interval", "5s",
		"-idle-timeout", "20s",
		"-handshake-timeout", "2s",
		"-drain-timeout", "1500ms",
		"-max-conns", "100",
		"-allowed-origins", "http://a.example, http://b.example",
		"-log-level", "debug",
		"-admin-addr", "127.0.0.1:9191",
		"-shutdown-delay", "3s",
		"-max-conns-per-ip", "50",
		"-max-message-rate", "20",
		"-max-message-burst", "40",
		"-trusted-proxies", "10.0.0.0/8, 192.168.1.7,::1",
		"-nats", "nats://127.0.0.1:4222,nats://127.0.0.2:4222",
		"-node-id", "east-1",
		"-node-timeout", "4s",
	}, noEnv)
	if c := cfg.Cluster; !slices.Equal(c.NATS, []string{"nats://127.0.0.1:4222", "nats://127.0.0.2:4222"}) ||
		c.NodeID != "east-1" || c.NodeTimeout != 4*time.Second {
		t.Errorf("cluster flags: %+v", c)
	}
	want := server.Config{
		Addr:             "127.0.0.1:9000",
		ReusePort:        true,
		Workers:          3,
		GCPercent:        40,
		MaxMessage:       1 << 20,
		WriteQueue:       512 << 10,
		PingInterval:     5 * time.Second,
		IdleTimeout:      20 * time.Second,
		HandshakeTimeout: 2 * time.Second,
		DrainTimeout:     1500 * time.Millisecond,
		MaxConns:         100,
		AllowedOrigins:   []string{"http://a.example", "http://b.example"},
		AdminAddr:        "127.0.0.1:9191",
		ShutdownDelay:    3 * time.Second,
		MaxConnsPerIP:    50,
		MaxMessageRate:   20,
		MaxMessageBurst:  40,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
			netip.MustParsePrefix("::1/128")},
	}
	checkConfig(t, cfg, want)
	if !cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
		t.Errorf("-log-level debug: logger does not log debug")
	}

	// The --name=value form works too, and -log-level error hides info.
	cfg = mustParse(t, []string{"--max-message=2048", "-log-level=error", "--reuse-port=false"}, noEnv)
	if cfg.MaxMessage != 2048 {
		t.Errorf("--max-message=2048: MaxMessage = %d", cfg.MaxMessage)
	}
	if cfg.ReusePort {
		t.Errorf("--reuse-port=false: ReusePort = true")
	}
	if cfg.Logger.Enabled(context.Background(), slog.LevelWarn) || !cfg.Logger.Enabled(context.Background(), slog.LevelError) {
		t.Errorf("-log-level error: wrong logger level")
	}
}

func checkConfig(t *testing.T, got, want server.Config) {
	t.Helper()
	if got.Addr != want.Addr {
		t.Errorf("Addr = %q, want %q", got.Addr, want.Addr)
	}
	if got.ReusePort != want.ReusePort {
		t.Errorf("ReusePort = %v, want %v", got.ReusePort, want.ReusePort)
	}
	if got.Workers != want.Workers {
		t.Errorf("Workers = %d, want %d", got.Workers, want.Workers)
	}
	if got.GCPercent != want.GCPercent {
		t.Errorf("GCPercent = %d, want %d", got.GCPercent, want.GCPercent)
	}
	if got.MaxMessage != want.MaxMessage {
		t.Errorf("MaxMessage = %d, want %d", got.MaxMessage, want.MaxMessage)
	}
	if got.WriteQueue != want.WriteQueue {
		t.Errorf("WriteQueue = %d, want %d", got.WriteQueue, want.WriteQueue)
	}
	if got.PingInterval != want.PingInterval {
		t.Errorf("PingInterval = %v, want %v", got.PingInterval, want.PingInterval)
	}
	if got.IdleTimeout != want.IdleTimeout {
		t.Errorf("IdleTimeout = %v, want %v", got.IdleTimeout, want.IdleTimeout)
	}
	if got.HandshakeTimeout != want.HandshakeTimeout {
		t.Errorf("HandshakeTimeout = %v, want %v", got.HandshakeTimeout, want.HandshakeTimeout)
	}
	if got.DrainTimeout != want.DrainTimeout {
		t.Errorf("DrainTimeout = %v, want %v", got.DrainTimeout, want.DrainTimeout)
	}
	if got.MaxConns != want.MaxConns {
		t.Errorf("MaxConns = %d, want %d", got.MaxConns, want.MaxConns)
	}
	if !slices.Equal(got.AllowedOrigins, want.AllowedOrigins) {
		t.Errorf("AllowedOrigins = %q, want %q", got.AllowedOrigins, want.AllowedOrigins)
	}
	if got.AdminAddr != want.AdminAddr || got.AdminAddrDefault != want.AdminAddrDefault || got.ShutdownDelay != want.ShutdownDelay {
		t.Errorf("AdminAddr %q AdminAddrDefault %v ShutdownDelay %v, want %q %v %v", got.AdminAddr, got.AdminAddrDefault, got.ShutdownDelay,
			want.AdminAddr, want.AdminAddrDefault, want.ShutdownDelay)
	}
	if got.MaxConnsPerIP != want.MaxConnsPerIP || got.MaxMessageRate != want.MaxMessageRate || got.MaxMessageBurst != want.MaxMessageBurst {
		t.Errorf("MaxConnsPerIP %d MaxMessageRate %d MaxMessageBurst %d, want %d %d %d", got.MaxConnsPerIP, got.MaxMessageRate,
			got.MaxMessageBurst, want.MaxConnsPerIP, want.MaxMessageRate, want.MaxMessageBurst)
	}
	if !slices.Equal(got.TrustedProxies, want.TrustedProxies) {
		t.Errorf("TrustedProxies = %v, want %v", got.TrustedProxies, want.TrustedProxies)
	}
}

func TestChatdParseConfigByteSizes(t *testing.T) {
	for in, want := range map[string]int{
		"65536": 65536, "64KiB": 64 << 10, "64K": 64 << 10, "64k": 64 << 10,
		"1MiB": 1 << 20, "2M": 2 << 20, " 8KiB ": 8 << 10,
	} {
		cfg, err := parseConfig([]string{"-max-message", in}, noEnv, io.Discard)
		if err != nil {
			t.Errorf("-max-message %q: %v", in, err)
			continue
		}
		if cfg.MaxMessage != want {
			t.Errorf("-max-message %q: MaxMessage = %d, want %d", in, cfg.MaxMessage, want)
		}
	}
}

func TestChatdParseConfigEnv(t *testing.T) {
	env := map[string]string{
		"CHATD_ADDR":              "127.0.0.1:7000",
		"CHATD_REUSE_PORT":        "true",
		"CHATD_WORKERS":           "2",
		"CHATD_MAX_MESSAGE":       "1KiB",
		"CHATD_WRITE_QUEUE":       "128KiB",
		"CHATD_PING_INTERVAL":     "10s",
		"CHATD_IDLE_TIMEOUT":      "40s",
		"CHATD_HANDSHAKE_TIMEOUT": "3s",
		"CHATD_DRAIN_TIMEOUT":     "2s",
		"CHATD_MAX_CONNS":         "50",
		"CHATD_ALLOWED_ORIGINS":   "a,b",
		"CHATD_LOG_LEVEL":         "warn",
		"CHATD_ADMIN_ADDR":        "127.0.0.1:9292",
		"CHATD_SHUTDOWN_DELAY":    "1s",
		"CHATD_MAX_CONNS_PER_IP":  "7",
		"CHATD_MAX_MESSAGE_RATE":  "5",
		"CHATD_MAX_MESSAGE_BURST": "9",
		"CHATD_TRUSTED_PROXIES":   "127.0.0.1/32",
		"CHATD_POLLER":            poller.EngineNetpoll,
	}
	reusePort := poller.CheckReusePort() == nil
	if !reusePort {
		delete(env, "CHATD_REUSE_PORT") // refused on this OS (TestChatdPollerFlag)
	}
	cfg := mustParse(t, nil, envMap(env))
	checkConfig(t, cfg, server.Config{
		Addr:             "127.0.0.1:7000",
		ReusePort:        reusePort,
		Poller:           poller.EngineNetpoll,
		Workers:          2,
		MaxMessage:       1 << 10,
		WriteQueue:       128 << 10,
		PingInterval:     10 * time.Second,
		IdleTimeout:      40 * time.Second,
		HandshakeTimeout: 3 * time.Second,
		DrainTimeout:     2 * time.Second,
		MaxConns:         50,
		AllowedOrigins:   []string{"a", "b"},
		AdminAddr:        "127.0.0.1:9292",
		ShutdownDelay:    time.Second,
		MaxConnsPerIP:    7,
		MaxMessageRate:   5,
		MaxMessageBurst:  9,
		TrustedProxies:   []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	// CHATD_ADMIN_ADDR=off (or -admin-addr '') turns the admin listener off.
	if cfg := mustParse(t, nil, envMap(map[string]string{"CHATD_ADMIN_ADDR": "off"})); cfg.AdminAddr != "" {
		t.Errorf("CHATD_ADMIN_ADDR=off: AdminAddr = %q", cfg.AdminAddr)
	}
	if cfg := mustParse(t, []string{"-admin-addr", ""}, noEnv); cfg.AdminAddr != "" {
		t.Errorf("-admin-addr '': AdminAddr = %q", cfg.AdminAddr)
	}
	// The default address given explicitly is the operator's choice: taken,
	// it is an error.
	if cfg := mustParse(t, []string{"-admin-addr", DefaultAdminAddr}, noEnv); cfg.AdminAddrDefault {
		t.Errorf("-admin-addr %s: AdminAddrDefault = true", DefaultAdminAddr)
	}
	if cfg := mustParse(t, nil, envMap(map[string]string{"CHATD_ADMIN_ADDR": DefaultAdminAddr})); cfg.AdminAddrDefault {
		t.Errorf("CHATD_ADMIN_ADDR=%s: AdminAddrDefault = true", DefaultAdminAddr)
	}
	// -version is a command, not a setting: CHATD_VERSION in the
	// environment does not stop chatd.
	if _, err := parseConfig(nil, envMap(map[string]string{"CHATD_VERSION": "1"}), io.Discard); err != nil {
		t.Errorf("CHATD_VERSION=1: %v, want chatd to run", err)
	}
	if _, err := parseConfig([]string{"-version"}, noEnv, io.Discard); !errors.Is(err, errVersion) {
		t.Errorf("-version: %v, want errVersion", err)
	}
	ctx := context.Background()
	if cfg.Logger.Enabled(ctx, slog.LevelInfo) || !cfg.Logger.Enabled(ctx, slog.LevelWarn) {
		t.Errorf("CHATD_LOG_LEVEL=warn: wrong logger level")
	}

	// Flags win over the environment, flag by flag.
	cfg = mustParse(t, []string{
		"-max-message", "2KiB",
		"-allowed-origins", "c",
		"-addr", "127.0.0.1:7001",
	}, envMap(env))
	if cfg.MaxMessage != 2<<10 {
		t.Errorf("flag -max-message 2KiB over CHATD_MAX_MESSAGE=1KiB: MaxMessage = %d", cfg.MaxMessage)
	}
	if !slices.Equal(cfg.AllowedOrigins, []string{"c"}) {
		t.Errorf("flag -allowed-origins c over CHATD_ALLOWED_ORIGINS=a,b: AllowedOrigins = %q", cfg.AllowedOrigins)
	}
	if cfg.Addr != "127.0.0.1:7001" {
		t.Errorf("flag -addr over CHATD_ADDR: Addr = %q", cfg.Addr)
	}
	if cfg.WriteQueue != 128<<10 {
		t.Errorf("CHATD_WRITE_QUEUE lost when other flags are set: WriteQueue = %d", cfg.WriteQueue)
	}
	cfg = mustParse(t, []string{"-reuse-port=false"}, envMap(env))
	if cfg.ReusePort {
		t.Errorf("flag -reuse-port=false over CHATD_REUSE_PORT=true: ReusePort = true")
	}
	for _, v := range []string{"1", "TRUE", "t"} {
		if !reusePort {
			break
		}
		if cfg := mustParse(t, nil, envMap(map[string]string{"CHATD_REUSE_PORT": v})); !cfg.ReusePort {
			t.Errorf("CHATD_REUSE_PORT=%s: ReusePort = false", v)
		}
	}

	// An empty variable is the same as an unset one.
	cfg = mustParse(t, nil, envMap(map[string]string{"CHATD_MAX_MESSAGE": ""}))
	if cfg.MaxMessage != server.DefaultMaxMessage {
		t.Errorf("empty CHATD_MAX_MESSAGE: MaxMessage = %d", cfg.MaxMessage)
	}
}

// TestChatdPollerFlag: -poller takes the engines of this OS; an unknown
// one, or one this OS does not have (epoll off Linux), is an error that
// names the flag; so is -reuse-port where the kernel would not spread
// connections (macOS).
func TestChatdPollerFlag(t *testing.T) {
	if cfg := mustParse(t, nil, noEnv); cfg.Poller != "" {
		t.Errorf("no -poller: Poller = %q, want empty (the poller's default, %s here)", cfg.Poller, poller.DefaultEngine())
	}
	for _, e := range poller.Engines() {
		if cfg := mustParse(t, []string{"-poller", e}, noEnv); cfg.Poller != e {
			t.Errorf("-poller %s: Poller = %q", e, cfg.Poller)
		}
	}
	bad := []string{"kqueue", "select"}
	if runtime.GOOS != "linux" {
		bad = append(bad, poller.EngineEpoll)
	}
	for _, e := range bad {
		_, err := parseConfig([]string{"-poller", e}, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-poller") || !strings.Contains(err.Error(), strconv.Quote(e)) {
			t.Errorf("-poller %s: %v, want an error naming -poller and %q", e, err, e)
		}
	}
	_, err := parseConfig([]string{"-reuse-port"}, noEnv, io.Discard)
	if rerr := poller.CheckReusePort(); rerr == nil && err != nil {
		t.Errorf("-reuse-port: %v", err)
	} else if rerr != nil && (err == nil || !strings.Contains(err.Error(), "-reuse-port")) {
		t.Errorf("-reuse-port on %s: %v, want an error naming -reuse-port", runtime.GOOS, err)
	}
}

// TestChatdZeroMeansDefault: as in server.Config, a zero flag value means
// the documented default; it is neither an error nor a zero limit.
func TestChatdZeroMeansDefault(t *testing.T) {
	cfg := mustParse(t, []string{"-max-message", "0", "-handshake-timeout", "0s", "-drain-timeout", "0s", "-max-http-conns", "0"}, noEnv)
	if cfg.MaxMessage != 0 || cfg.HandshakeTimeout != 0 || cfg.DrainTimeout != 0 || cfg.MaxHTTPConns != 0 {
		t.Fatalf("zero flags: %+v", cfg)
	}
	cfg.Addr = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0" // not the default: tests run side by side
	s, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New with zero values: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.Shutdown(context.Background())
}

func TestChatdParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the error must contain this
	}{
		{"bad byte size", []string{"-max-message", "abc"}, nil, "-max-message"},
		{"negative byte size", []string{"-write-queue", "-5"}, nil, "-write-queue"},
		{"bad duration", []string{"-ping-interval", "xyz"}, nil, "-ping-interval"},
		{"idle not above ping", []string{"-idle-timeout", "1s"}, nil, "-idle-timeout"},
		{"negative workers", []string{"-workers", "-1"}, nil, "-workers"},
		{"negative max conns", []string{"-max-conns", "-1"}, nil, "-max-conns"},
		{"negative max http conns", []string{"-max-http-conns", "-1"}, nil, "-max-http-conns"},
		{"negative max conns per ip", []string{"-max-conns-per-ip", "-1"}, nil, "-max-conns-per-ip"},
		{"negative message rate", []string{"-max-message-rate", "-3"}, nil, "-max-message-rate"},
		{"huge message burst", []string{"-max-message-burst", "2000000"}, nil, "-max-message-burst"},
		{"bad trusted proxy", []string{"-trusted-proxies", "10.0.0.0/8,nginx"}, nil, "-trusted-proxies"},
		{"negative shutdown delay", []string{"-shutdown-delay", "-1s"}, nil, "-shutdown-delay"},
		{"negative drain timeout", []string{"-drain-timeout", "-1s"}, nil, "-drain-timeout"},
		{"node timeout under a heartbeat", []string{"-node-timeout", "1s"}, nil, "-node-timeout"},
		{"bad env node timeout", nil, map[string]string{"CHATD_NODE_TIMEOUT": "later"}, "CHATD_NODE_TIMEOUT"},
		{"bad log level", []string{"-log-level", "loud"}, nil, "-log-level"},
		{"negative history size", []string{"-history-size", "-1"}, nil, "-history-size"},
		{"zero history ttl", []string{"-history-ttl", "0s"}, nil, "-history-ttl"},
		{"bad history max bytes", []string{"-history-max-bytes", "much"}, nil, "-history-max-bytes"},
		{"unknown flag", []string{"-nope"}, nil, "-nope"},
		{"extra argument", []string{"-addr", ":9000", "extra"}, nil, `"extra"`},
		{"bad env value", nil, map[string]string{"CHATD_MAX_MESSAGE": "lots"}, "CHATD_MAX_MESSAGE"},
		{"bad env duration", nil, map[string]string{"CHATD_PING_INTERVAL": "soon"}, "CHATD_PING_INTERVAL"},
		{"bad env bool", nil, map[string]string{"CHATD_REUSE_PORT": "yes please"}, "CHATD_REUSE_PORT"},
		{"bool flag takes no separate value", []string{"-reuse-port", "false"}, nil, `"false"`},
		// A bad environment value is an error even when a flag would
		// override it.
		{"bad env under a flag", []string{"-workers", "1"}, map[string]string{"CHATD_WORKERS": "many"}, "CHATD_WORKERS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := parseConfig(tc.args, envMap(tc.env), &stderr)
			if err == nil {
				t.Fatalf("parseConfig(%q, %v) = nil error, want one naming %s", tc.args, tc.env, tc.want)
			}
			if errors.Is(err, errHelp) {
				t.Fatalf("parseConfig(%q) = errHelp", tc.args)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			if stderr.Len() != 0 {
				t.Errorf("parseConfig wrote to stderr on an error: %q", stderr.String())
			}
		})
	}
}

func TestChatdParseConfigHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var stderr bytes.Buffer
		_, err := parseConfig([]string{arg}, noEnv, &stderr)
		if !errors.Is(err, errHelp) {
			t.Fatalf("parseConfig(%s) = %v, want errHelp", arg, err)
		}
		usage := stderr.String()
		if !strings.Contains(usage, "Usage: chatd") {
			t.Errorf("%s: usage has no \"Usage: chatd\" line:\n%s", arg, usage)
		}
		if !strings.Contains(usage, "CHATD_") {
			t.Errorf("%s: usage does not mention the CHATD_* variables:\n%s", arg, usage)
		}
		for _, f := range allFlags {
			if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `\b`).MatchString(usage) {
				t.Errorf("%s: usage does not list -%s:\n%s", arg, f, usage)
			}
		}
	}
}

// wsEvent is one result of a client's read loop.
type wsEvent struct {
	data string
	err  error
}

// readLoop reads messages from c onto a channel until an error, which it
// sends last.
func readLoop(c *websocket.Conn) <-chan wsEvent {
	ch := make(chan wsEvent, 64)
	go func() {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				ch <- wsEvent{err: err}
				close(ch)
				return
			}
			ch <- wsEvent{data: string(p)}
		}
	}()
	return ch
}

// waitMessage reads ch until want arrives; other messages are skipped.
var positionField = regexp.MustCompile(`,"chatd_position":"[^"]*"`)

func waitMessage(t *testing.T, ch <-chan wsEvent, who, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok || ev.err != nil {
				t.Fatalf("%s: connection ended before %q arrived: %v", who, want, ev.err)
			}
			// Channels that keep history give their position in
			// subscription_succeeded and events (chatd_position).
			if ev.data == want || positionField.ReplaceAllString(ev.data, "") == want {
				return
			}
		case <-timeout:
			t.Fatalf("%s: %q did not arrive in 10s", who, want)
		}
	}
}

// waitClose reads ch until the connection ends, and returns the close code.
func waitClose(t *testing.T, ch <-chan wsEvent, who string) int {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("%s: read loop ended without an error", who)
			}
			if ev.err == nil {
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(ev.err, &ce) {
				t.Fatalf("%s: connection ended with %v, want a close frame", who, ev.err)
			}
			return ce.Code
		case <-timeout:
			t.Fatalf("%s: no close frame within 10s", who)
		}
	}
}

// chatdProc is a chatd process started by startChatd.
type chatdProc struct {
	cmd    *exec.Cmd
	addr   string // from its "chatd listening ... addr=" line
	admin  string // its admin listener, from the same line's admin=
	stderr *testutil.LockedBuffer

	waitDone chan struct{} // closed once the process is reaped
	waitErr  error         // cmd.Wait's result, set before waitDone closes
}

// startChatd runs bin with args (and the test's environment without its
// CHATD_* variables), waits until it logs "chatd listening", and returns
// it. The process is killed when the test ends if it is still running,
// and its stderr is logged if the test failed.
func startChatd(t *testing.T, bin string, args ...string) *chatdProc {
	t.Helper()
	if !slices.Contains(args, "-admin-addr") {
		// Not the default (DefaultAdminAddr): many chatd run side by side.
		args = append([]string{"-admin-addr", "127.0.0.1:0"}, args...)
	}
	return startChatdEnv(t, bin, nil, args...)
}

// startChatdEnv is startChatd with env added to the process's environment
// and args as they are (no -admin-addr added).
func startChatdEnv(t *testing.T, bin string, env []string, args ...string) *chatdProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(withoutChatdEnv(os.Environ()), env...)
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chatd: %v", err)
	}
	p := &chatdProc{cmd: cmd, stderr: new(testutil.LockedBuffer), waitDone: make(chan struct{})}
	addrCh := make(chan [2]string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		re := regexp.MustCompile(`msg="chatd listening".* addr=(\S+) admin=(\S+)`)
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.Write([]byte(line + "\n"))
			if m := re.FindStringSubmatch(line); m != nil {
				select {
				case addrCh <- [2]string{m[1], m[2]}:
				default:
				}
			}
		}
	}()
	go func() {
		<-readDone // Wait must not close the pipe before it is read
		p.waitErr = cmd.Wait()
		close(p.waitDone)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waitDone:
		default:
			cmd.Process.Kill()
			<-p.waitDone
		}
		if t.Failed() {
			t.Logf("chatd %q (pid %d) stderr:\n%s", args, cmd.Process.Pid, p.stderr.String())
		}
	})
	select {
	case a := <-addrCh:
		p.addr, p.admin = a[0], a[1]
	case <-p.waitDone:
		t.Fatalf("chatd %q exited before listening: %v", args, p.waitErr)
	case <-time.After(15 * time.Second):
		t.Fatalf("chatd %q: no \"chatd listening addr=...\" line on stderr within 15s", args)
	}
	return p
}

// exitStatus waits until the process is reaped and returns its exit
// status. After within, it kills the process and fails.
func (p *chatdProc) exitStatus(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.waitDone:
	case <-time.After(within):
		p.cmd.Process.Kill()
		<-p.waitDone
		t.Fatalf("chatd did not exit within %v", within)
	}
	if p.waitErr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("waiting for chatd: %v", p.waitErr)
	return -1
}

// TestChatdProcess builds the chatd binary and runs it as a user would.
func TestChatdProcess(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")

	t.Run("SIGTERM", func(t *testing.T) {
		proc := startChatd(t, bin, "-addr", "127.0.0.1:0")
		addr := proc.addr
		if !regexp.MustCompile(`^127\.0\.0\.1:[1-9][0-9]*$`).MatchString(addr) {
			t.Fatalf("listening addr = %q, want 127.0.0.1:PORT", addr)
		}

		url := "ws://" + addr + "/chat"
		dial := func(who string) (*websocket.Conn, <-chan wsEvent) {
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			c, resp, err := d.Dial(url, nil)
			if err != nil {
				t.Fatalf("%s: dial %s: %v", who, url, err)
			}
			resp.Body.Close()
			t.Cleanup(func() { c.Close() })
			return c, readLoop(c)
		}
		a, aCh := dial("client A")
		b, bCh := dial("client B")

		// The 101 response can reach a client before the server has put
		// it in the room. B's own messages are handled after B joined, so
		// B repeats a sync message until A (joined long before) sees one.
		synced, syncDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(syncDone)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-synced:
					return
				case <-tick.C:
					if b.WriteMessage(websocket.TextMessage, []byte("sync")) != nil {
						return
					}
				}
			}
		}()
		waitMessage(t, aCh, "client A", "sync")
		close(synced)
		<-syncDone // B has one writer at a time

		if err := a.WriteMessage(websocket.TextMessage, []byte("hello from A")); err != nil {
			t.Fatalf("client A: write: %v", err)
		}
		waitMessage(t, bCh, "client B", "hello from A")
		if err := b.WriteMessage(websocket.TextMessage, []byte("hello from B")); err != nil {
			t.Fatalf("client B: write: %v", err)
		}
		waitMessage(t, aCh, "client A", "hello from B")

		start := time.Now()
		if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
		if code := waitClose(t, aCh, "client A"); code != websocket.CloseGoingAway {
			t.Errorf("client A: close code %d, want %d (going away)", code, websocket.CloseGoingAway)
		}
		if code := waitClose(t, bCh, "client B"); code != websocket.CloseGoingAway {
			t.Errorf("client B: close code %d, want %d (going away)", code, websocket.CloseGoingAway)
		}
		status := proc.exitStatus(t, 8*time.Second)
		if status != 0 {
			t.Errorf("chatd exited with status %d after SIGTERM, want 0", status)
		}
		t.Logf("chatd exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	})

	// On SIGTERM /readyz (admin port) answers 503 before the first close
	// frame reaches a client: with -shutdown-delay the load balancer has
	// that long to stop sending new clients.
	t.Run("ReadyzBeforeCloseFrame", func(t *testing.T) {
		proc := startChatd(t, bin, "-addr", "127.0.0.1:0", "-shutdown-delay", "1s")
		if !regexp.MustCompile(`^127\.0\.0\.1:[1-9][0-9]*$`).MatchString(proc.admin) {
			t.Fatalf("admin addr = %q, want 127.0.0.1:PORT (logged at start)", proc.admin)
		}
		probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		get := func(path string) int {
			resp, err := probe.Get("http://" + proc.admin + path)
			if err != nil {
				return 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := get("/readyz"); code != 200 {
			t.Fatalf("/readyz %d before SIGTERM, want 200", code)
		}
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+proc.addr+"/chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		defer c.Close()
		type closed struct {
			at  time.Time
			err error
		}
		closeCh := make(chan closed, 1)
		go func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					closeCh <- closed{time.Now(), err}
					return
				}
			}
		}()
		var first503 time.Time
		stop, probed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(probed)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if get("/readyz") == http.StatusServiceUnavailable {
					first503 = time.Now()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		cl := <-closeCh
		close(stop)
		<-probed
		var ce *websocket.CloseError
		if !errors.As(cl.err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("client: %v, want close 1001", cl.err)
		}
		if first503.IsZero() || !first503.Before(cl.at) {
			t.Fatalf("/readyz: first 503 at %v, close frame at %v: want the 503 first", first503, cl.at)
		}
		t.Logf("/readyz 503 %v before the close frame", cl.at.Sub(first503).Round(time.Millisecond))
		if status := proc.exitStatus(t, 10*time.Second); status != 0 {
			t.Errorf("exit status %d after SIGTERM", status)
		}
	})

	// A taken admin address: exit status 1 and a line that names
	// -admin-addr (not the public address).
	t.Run("AdminAddrInUse", func(t *testing.T) {
		first := startChatd(t, bin, "-addr", "127.0.0.1:0")
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-admin-addr", first.admin)
		cmd.Env = withoutChatdEnv(os.Environ())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("second chatd on admin %s: %v, want exit status 1\n%s", first.admin, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "-admin-addr") || !strings.Contains(stderr.String(), first.admin) {
			t.Errorf("stderr does not name -admin-addr and %s: %q", first.admin, stderr.String())
		}
	})

	t.Run("BadFlag", func(t *testing.T) {
		cmd := exec.Command(bin, "-max-message", "abc")
		cmd.Env = withoutChatdEnv(os.Environ())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("chatd -max-message abc: %v, want exit status 2", err)
		}
		out := stderr.String()
		if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
			t.Errorf("stderr is not exactly one line: %q", out)
		}
		if !strings.Contains(out, "-max-message") {
			t.Errorf("stderr does not name -max-message: %q", out)
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout not empty: %q", stdout.String())
		}
	})

	t.Run("BadEnv", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = append(withoutChatdEnv(os.Environ()), "CHATD_PING_INTERVAL=soon")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("CHATD_PING_INTERVAL=soon chatd: %v, want exit status 2", err)
		}
		out := stderr.String()
		if strings.Count(out, "\n") != 1 || !strings.Contains(out, "CHATD_PING_INTERVAL") {
			t.Errorf("stderr is not one line naming CHATD_PING_INTERVAL: %q", out)
		}
	})

	t.Run("Help", func(t *testing.T) {
		cmd := exec.Command(bin, "-h")
		cmd.Env = withoutChatdEnv(os.Environ())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("chatd -h: %v, want exit status 0\n%s", err, out)
		}
		if !strings.Contains(string(out), "Usage: chatd") {
			t.Errorf("chatd -h printed no usage:\n%s", out)
		}
		for _, f := range allFlags {
			if !strings.Contains(string(out), "-"+f) {
				t.Errorf("chatd -h does not list -%s", f)
			}
		}
	})
}

// withoutChatdEnv drops CHATD_* variables of the test's own environment.
func withoutChatdEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		// CHATD_POLLER stays: .ci/run runs these tests on each engine.
		return strings.HasPrefix(kv, "CHATD_") && !strings.HasPrefix(kv, "CHATD_POLLER=")
	})
}
