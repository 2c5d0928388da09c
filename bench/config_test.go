package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	if c.Procs != 3 || c.SourceIPs != 8 || c.Hold == 0 || c.Concurrency == 0 {
		t.Errorf("defaults: procs %d, source IPs %d, hold %v, concurrency %d", c.Procs, c.SourceIPs, c.Hold, c.Concurrency)
	}
	if ips := c.sourceIPs(); len(ips) != 8 || ips[1] != "127.0.0.2" || ips[7] != "127.0.0.8" {
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

func TestValidateInstances(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"broadcast over instances", Config{Scenario: "broadcast", Server: "x {addr}", Instances: 2}, "only the density scenario"},
		{"churn over urls", Config{Scenario: "churn", URL: "ws://127.0.0.1:1,ws://127.0.0.1:2"}, "only the density scenario"},
		{"instances vs urls", Config{Scenario: "density", URL: "ws://127.0.0.1:1,ws://127.0.0.1:2", Instances: 3}, "-instances 3 but -url lists 2"},
		{"pids vs urls", Config{Scenario: "density", URL: "ws://127.0.0.1:1,ws://127.0.0.1:2", PIDs: []int{7}}, "-pid lists 1 process(es) for 2 URL(s)"},
		{"same url twice", Config{Scenario: "density", URL: "ws://127.0.0.1:1, ws://localhost:1"}, "twice"},
		{"non-loopback in list", Config{Scenario: "density", URL: "ws://127.0.0.1:1,ws://10.0.0.1:1"}, "refusing non-loopback"},
		{"pid with server", Config{Scenario: "density", Server: "x {addr}", PIDs: []int{7}}, "-pid is for -url"},
		{"too many", Config{Scenario: "density", Server: "x {addr}", Instances: 1000}, "-instances 1000"},
		{"reuse-port with url", Config{Scenario: "density", URL: "ws://127.0.0.1:1", ReusePort: true}, "-reuse-port is for servers chatbench starts"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	c := Config{Scenario: "density", URL: "ws://127.0.0.1:1,ws://127.0.0.1:2", PIDs: []int{0, 9}, Conns: 38000}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Instances != 2 || c.Procs != 3 || c.SourceIPs != 8 {
		t.Errorf("two URLs, 38000 conns: instances %d, procs %d, source IPs %d", c.Instances, c.Procs, c.SourceIPs)
	}
	s := Config{Scenario: "density", Server: "x {addr}", Compare: "y {addr}", Instances: 2, Conns: 38000}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Instances != 2 || s.Procs < 3 {
		t.Errorf("-instances 2: instances %d, procs %d", s.Instances, s.Procs)
	}
	if d := (&Config{Scenario: "density", Server: "x {addr}"}); d.Validate() != nil || d.Instances != 1 {
		t.Errorf("default instances %d", d.Instances)
	}
}

func TestDefaultProcsFollowsFDLimit(t *testing.T) {
	for _, c := range []struct{ total, limit, want int }{
		{100, 20000, 1},
		{15000, 20000, 1},
		{15001, 20000, 2},
		{38000, 20000, 3}, // at most 15,000 per process
		{38000, 4096, 10}, // 4096 - 64 per process
		{1000, 1024, 2},
	} {
		if got := defaultProcs(c.total, c.limit); got != c.want {
			t.Errorf("defaultProcs(%d, %d) = %d, want %d", c.total, c.limit, got, c.want)
		}
		cfg := Config{Scenario: "density", Conns: c.total}
		if err := cfg.planClientsFor(c.limit); err != nil || cfg.Procs != c.want {
			t.Errorf("plan %d conns under limit %d: procs %d, %v", c.total, c.limit, cfg.Procs, err)
		}
	}
}

func TestParsePIDList(t *testing.T) {
	cfg, err := ParseArgs([]string{"density", "-url", "ws://127.0.0.1:1,ws://127.0.0.1:2", "-pid", "12, 34", "-instances", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.PIDs) != 2 || cfg.PIDs[0] != 12 || cfg.PIDs[1] != 34 || cfg.Instances != 2 {
		t.Errorf("parsed pids %v, instances %d", cfg.PIDs, cfg.Instances)
	}
	if _, err := ParseArgs([]string{"density", "-pid", "x"}, io.Discard); err == nil {
		t.Errorf("-pid x accepted")
	}
}

func TestSpreadOverInstances(t *testing.T) {
	// Round-robin over instances; within an instance, rooms and source
	// addresses still take turns, so every instance sees every room.
	s := &OpenSpec{Addr: "a", Addrs: []string{"a", "b"}, Room: "r", Rooms: 2}
	rooms := map[string]map[string]int{}
	for id := 0; id < 8; id++ {
		addr, k, rank := s.pickAddr(id)
		if want := []string{"a", "b"}[id%2]; addr != want || k != id%2 || rank != id/2 {
			t.Errorf("id %d: %s, instance %d, rank %d", id, addr, k, rank)
		}
		if rooms[addr] == nil {
			rooms[addr] = map[string]int{}
		}
		rooms[addr][roomPath(s.Room, s.Rooms, rank)]++
	}
	for addr, m := range rooms {
		if len(m) != 2 || m["/chat/r-0"] != 2 || m["/chat/r-1"] != 2 {
			t.Errorf("instance %s rooms %v", addr, m)
		}
	}
	one := &OpenSpec{Addr: "a", Room: "r", Rooms: 3}
	if addr, k, rank := one.pickAddr(5); addr != "a" || k != 0 || rank != 5 {
		t.Errorf("one instance: %s %d %d", addr, k, rank)
	}
}

func TestValidateNATS(t *testing.T) {
	dir := t.TempDir()
	natsBin := filepath.Join(dir, "nats-server")
	plain := filepath.Join(dir, "not-executable")
	for path, mode := range map[string]os.FileMode{natsBin: 0o755, plain: 0o644} {
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	cluster := "./chatd -addr {addr} -nats {nats}"
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"{nats} without -nats", Config{Scenario: "broadcast", Server: cluster}, "no -nats"},
		{"{nats} in -compare without -nats", Config{Scenario: "broadcast", Server: "x {addr}", Compare: cluster}, "no -nats"},
		{"missing binary", Config{Scenario: "broadcast", Server: cluster, NATS: filepath.Join(dir, "nope")}, "not an executable nats-server"},
		{"not executable", Config{Scenario: "broadcast", Server: cluster, NATS: plain}, "not an executable nats-server"},
		{"directory", Config{Scenario: "broadcast", Server: cluster, NATS: dir}, "not an executable nats-server"},
		{"density", Config{Scenario: "density", Server: cluster, NATS: natsBin}, "-nats is for the broadcast and recovery scenarios"},
		{"soak", Config{Scenario: "soak", Server: cluster, NATS: natsBin}, "-nats is for the broadcast and recovery scenarios"},
		{"no {nats}", Config{Scenario: "broadcast", Server: "x {addr}", NATS: natsBin}, "no server command has {nats}"},
		{"-compare not clustered", Config{Scenario: "broadcast", Server: cluster, Compare: "y {addr}", NATS: natsBin, Instances: 2}, `"y {addr}" has no {nats}`},
		{"-url", Config{Scenario: "broadcast", URL: "ws://127.0.0.1:1", NATS: natsBin}, "with -url"},
		{"pusher", Config{Scenario: "broadcast", Server: cluster, NATS: natsBin, Protocol: "raw,pusher"}, "-protocol raw"},
		{"-nats-js without -nats", Config{Scenario: "broadcast", Server: "x {addr}", NATSJS: true}, "give -nats"},
		{"broadcast over instances", Config{Scenario: "broadcast", Server: "x {addr}", Instances: 3}, "-nats PATH-to-nats-server"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	c := Config{Scenario: "broadcast", Server: cluster, Compare: "y {addr} {nats}", NATS: natsBin, Instances: 3, Conns: 300}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Instances != 3 || c.NATS != natsBin {
		t.Errorf("instances %d, nats %q", c.Instances, c.NATS)
	}
	// One instance: a command without {nats} (here A) is fine beside one
	// with it.
	one := Config{Scenario: "broadcast", Server: "x {addr}", Compare: cluster, NATS: natsBin}
	if err := one.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestPlaceSenders(t *testing.T) {
	worker := func(perInstance ...int) *InspectResult {
		in := &InspectResult{OpenPerAddr: perInstance}
		for _, n := range perInstance {
			in.Open += n
		}
		return in
	}
	for _, c := range []struct {
		name       string
		each       []*InspectResult
		senders    int
		instances  int
		only       int
		perWorker  string
		senderInst []int
		err        bool
	}{
		{"one instance", []*InspectResult{{Open: 2}, {Open: 5}}, 4, 1, -1, "[[0 2] [1 3]]", nil, false},
		{"one instance, too few", []*InspectResult{{Open: 1}, {Open: 1}}, 3, 1, -1, "", nil, true},
		{"round-robin", []*InspectResult{worker(5, 5, 5), worker(5, 5, 5)}, 5, 3, -1, "[[0 2 4] [1 3]]", []int{0, 1, 2, 0, 1}, false},
		// Worker 0 has no member on instance 1; worker 1 has them all.
		{"instance only on one worker", []*InspectResult{worker(2, 0, 1), worker(1, 1, 1)}, 3, 3, -1, "[[0 2] [1]]", []int{0, 1, 2}, false},
		// No member on instance 2 at all: the next instance takes it.
		{"instance empty", []*InspectResult{worker(3, 3, 0)}, 3, 3, -1, "[[0 1 2]]", []int{0, 1, 0}, false},
		{"too few", []*InspectResult{worker(1, 1, 0)}, 3, 3, -1, "", nil, true},
		// A flood (-senders-on 2): every sender on instance 1 (from 0),
		// taken from the workers in turn.
		{"flood", []*InspectResult{worker(9, 2, 9), worker(9, 2, 9)}, 4, 3, 1, "[[0 2] [1 3]]", []int{1, 1, 1, 1}, false},
		{"flood, one worker", []*InspectResult{worker(9, 0, 9), worker(0, 3, 0)}, 3, 3, 1, "[[] [0 1 2]]", []int{1, 1, 1}, false},
		// Too few members on the senders' instance: no other takes them.
		{"flood, too few", []*InspectResult{worker(9, 2, 9)}, 3, 3, 1, "", nil, true},
	} {
		per, inst, err := placeSenders(c.each, c.senders, c.instances, c.only)
		if c.err {
			if err == nil {
				t.Errorf("%s: placed %v %v, want an error", c.name, per, inst)
			}
			continue
		}
		if err != nil || fmt.Sprint(per) != c.perWorker || fmt.Sprint(inst) != fmt.Sprint(c.senderInst) {
			t.Errorf("%s: got %v %v (%v), want %s %v", c.name, per, inst, err, c.perWorker, c.senderInst)
		}
	}
}

func TestValidateFlood(t *testing.T) {
	natsBin := filepath.Join(t.TempDir(), "nats-server")
	if err := os.WriteFile(natsBin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cluster := "./chatd -addr {addr} -nats {nats}"
	flood := func(senders, conns, instances, on int, readers ...int) Config {
		return Config{Scenario: "broadcast", Server: cluster, NATS: natsBin, Instances: instances, Conns: conns, Senders: senders, SendersOn: on, ReadersOn: readers}
	}
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"readers without senders", flood(10, 50, 3, 0, 2), "give -senders-on"},
		{"one instance", flood(10, 50, 1, 1), "-instances N (N >= 2)"},
		{"no nats", Config{Scenario: "broadcast", Server: "x {addr}", Instances: 3, Conns: 50, Senders: 10, SendersOn: 1}, "-nats PATH"},
		{"density", Config{Scenario: "density", Server: "x {addr}", Instances: 3, SendersOn: 1}, "-senders-on is for broadcast"},
		{"beyond instances", flood(10, 50, 3, 4), "-senders-on 4: an instance between 1 and 3"},
		{"negative", flood(10, 50, 3, -1), "-senders-on -1"},
		{"reader instance 0", flood(10, 50, 3, 1, 0), "-readers-on 0"},
		{"reader instance twice", flood(10, 50, 3, 1, 2, 2), "instance 2 twice"},
		{"no readers", flood(10, 10, 3, 1), "no readers"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	// By default the readers go to every instance but the senders'.
	c := flood(10, 50, 3, 2)
	if err := c.Validate(); err != nil || fmt.Sprint(c.ReadersOn) != "[1 3]" {
		t.Errorf("default readers: %v (%v), want [1 3]", c.ReadersOn, err)
	}
	// The local baseline: the readers on the senders' instance.
	c = flood(10, 50, 3, 1, 1)
	if err := c.Validate(); err != nil || fmt.Sprint(c.ReadersOn) != "[1]" {
		t.Errorf("local readers: %v (%v)", c.ReadersOn, err)
	}
}

func TestFloodPlacement(t *testing.T) {
	s := &OpenSpec{Addrs: []string{"a", "b", "c"}, Place: &Placement{Senders: 3, SenderInstance: 0, ReaderInstances: []int{1, 2}}}
	var got []string
	for id := range 9 {
		addr, k, rank := s.pickAddr(id)
		got = append(got, fmt.Sprintf("%s%d/%d", addr, k, rank))
	}
	// Senders 0-2 on a, readers 3-8 alternately on b and c.
	if want := "[a0/0 a0/1 a0/2 b1/0 c2/0 b1/1 c2/1 b1/2 c2/2]"; fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
	// Without a placement: round-robin as before.
	s.Place = nil
	if addr, k, rank := s.pickAddr(4); addr != "b" || k != 1 || rank != 1 {
		t.Errorf("round-robin: %s %d %d", addr, k, rank)
	}
}
