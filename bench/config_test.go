package bench

import (
	"io"
	"strings"
	"testing"
)

func TestValidateRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"non-loopback host", Config{Scenario: "density", URL: "ws://10.1.2.3:8080"}, "refusing non-loopback"},
		{"tls", Config{Scenario: "density", URL: "wss://127.0.0.1:8080"}, "only ws://"},
		{"path", Config{Scenario: "density", URL: "ws://127.0.0.1:8080/chat/x"}, "chatbench adds /chat/{room}"},
		{"no server", Config{Scenario: "density"}, "exactly one of -url"},
		{"both servers", Config{Scenario: "density", URL: "ws://127.0.0.1:1", Server: "x {addr}"}, "exactly one of -url"},
		{"no {addr}", Config{Scenario: "density", Server: "./chatd -addr :8080"}, "has no {addr}"},
		{"scenario", Config{Scenario: "flood", URL: "ws://127.0.0.1:1"}, "unknown scenario"},
		{"size", Config{Scenario: "broadcast", URL: "ws://127.0.0.1:1", Size: 10}, "payload header"},
		{"senders", Config{Scenario: "broadcast", URL: "ws://127.0.0.1:1", Conns: 3, Senders: 5}, "5 senders but only 3"},
		{"fd limit", Config{Scenario: "density", URL: "ws://127.0.0.1:1", Conns: 100000, Procs: 1}, "use -procs"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	c := Config{Scenario: "density", URL: "ws://localhost:8080", Conns: 40000}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Procs != 3 || c.SourceIPs != 2 || c.Hold == 0 || c.Concurrency == 0 {
		t.Errorf("defaults: procs %d, source IPs %d, hold %v, concurrency %d", c.Procs, c.SourceIPs, c.Hold, c.Concurrency)
	}
	if ips := c.sourceIPs(); len(ips) != 2 || ips[1] != "127.0.0.2" {
		t.Errorf("source IPs %v", ips)
	}
	s := Config{Scenario: "slowconsumer", Server: "./x {addr}"}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Conns != 100 || s.Slow != 20 || s.Size != 4096 || s.Senders != 4 {
		t.Errorf("slowconsumer defaults %+v", s)
	}
}

func TestParseArgs(t *testing.T) {
	cfg, err := ParseArgs([]string{"broadcast", "-conns", "7", "-rate", "100", "-server", "./chatd -addr {addr}"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scenario != "broadcast" || cfg.Conns != 7 || cfg.Rate != 100 || cfg.Server != "./chatd -addr {addr}" {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg.Args[0] != "chatbench" || cfg.Args[1] != "broadcast" {
		t.Errorf("args recorded as %v", cfg.Args)
	}
	if _, err := ParseArgs([]string{"-conns", "7"}, io.Discard); err == nil {
		t.Errorf("no scenario accepted")
	}
}

func TestNameOf(t *testing.T) {
	for cmd, want := range map[string]string{
		"./chatd -addr {addr}":                   "chatd",
		"go run ./bench/baseline -addr {addr}":   "baseline",
		"GOMAXPROCS=2 /usr/bin/nbio-chat {addr}": "nbio-chat",
		"php server.php {addr}":                  "php",
	} {
		if got := nameOf(cmd); got != want {
			t.Errorf("nameOf(%q) = %q, want %q", cmd, got, want)
		}
	}
}
