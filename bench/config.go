package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Scenarios chatbench knows.
var Scenarios = []string{"density", "broadcast", "churn", "slowloris", "slowconsumer", "soak", "recovery"}

// Config is one chatbench invocation. The zero value of every field means
// the documented default, filled in by Validate (some defaults depend on
// the scenario).
type Config struct {
	Scenario string `json:"scenario"`

	// The server under test: URL (+PIDs) of running servers (one URL, or
	// a comma-separated list of instances), or Server, a shell command
	// with {addr} that chatbench starts Instances times. Compare is a
	// second command run the same way for side-by-side figures.
	URL  string `json:"url,omitempty"`
	PIDs []int  `json:"pids,omitempty"` // with URL: one per URL; 0 or none: the listener's owner
	// MetricsAddr (with URL) is host:port of the server's Prometheus
	// /metrics (chatd: its -admin-addr); empty: the URL's own host:port.
	// A Server command gets one by {admin}.
	MetricsAddr   string        `json:"metrics_addr,omitempty"`
	Server        string        `json:"server,omitempty"`
	Compare       string        `json:"compare,omitempty"`
	ServerName    string        `json:"server_name,omitempty"`
	CompareName   string        `json:"compare_name,omitempty"`
	ServerTimeout time.Duration `json:"server_timeout"` // zero means 60s
	Repeat        int           `json:"repeat"`         // zero means 1
	// Instances is how many server processes make up each side: a -server
	// or -compare command is started that many times, each on its own
	// port, and connections are spread over them round-robin. Zero means
	// 1, or with URL the number of URLs. Density only when above 1, and
	// broadcast with NATS.
	Instances int `json:"instances"`
	// ReusePort: the instances of a command share one port instead of one
	// each (the command must set SO_REUSEPORT: chatd -reuse-port), and the
	// kernel spreads the connections over them by a hash of their
	// addresses; each instance's share is counted from its open fds.
	ReusePort bool `json:"reuse_port,omitempty"`
	// MinAvailableMiB stops a run when /proc/meminfo's MemAvailable falls
	// under it (MiB): the servers and client workers are killed at once and
	// the run fails with how many connections were open. Zero means 1024;
	// negative turns the guard off.
	MinAvailableMiB int `json:"min_available_mib"`
	// NATS is the path of a nats-server binary: for each run, chatbench
	// starts it on a free loopback port before the server instances and
	// replaces {nats} in the -server and -compare commands with its URL,
	// nats://127.0.0.1:PORT, so that the instances form one cluster (a
	// room spans them). Its process counts among the server's.
	NATS string `json:"nats,omitempty"`
	// NATSJS starts that nats-server with JetStream (-js -sd DIR, a fresh
	// temporary directory per run, removed after it): what chatd's
	// cluster history (and Pusher's shared state) needs.
	NATSJS bool `json:"nats_js,omitempty"`
	// SendersOn (broadcast over a cluster, counted from 1): all -senders
	// on this instance, and the other members (readers) round-robin over
	// ReadersOn (default: every other instance) - a flood from one node.
	// Zero: senders and members round-robin over all instances.
	SendersOn int   `json:"senders_on,omitempty"`
	ReadersOn []int `json:"readers_on,omitempty"`

	// Client side.
	Procs          int           `json:"procs"`           // worker processes; zero means one per 15,000 connections
	SourceIPs      int           `json:"source_ips"`      // 127.0.0.1..N; zero means one per 5,000 connections
	Concurrency    int           `json:"concurrency"`     // dials in flight per process; zero means 256
	ConnectTimeout time.Duration `json:"connect_timeout"` // zero means 10s

	// Shape of the load.
	Conns        int           `json:"conns"`    // members (honest ones for slowloris/slowconsumer)
	Rooms        int           `json:"rooms"`    // density only; zero means 1
	Room         string        `json:"room"`     // room name prefix; zero means "bench"
	Senders      int           `json:"senders"`  // zero means 10 (4 for slowloris/slowconsumer, 1 for churn's check)
	Messages     int           `json:"messages"` // per sender
	Size         int           `json:"size"`     // bytes per message, >= 44
	Rate         float64       `json:"rate"`     // messages/s over all senders; zero means closed loop
	Window       int           `json:"window"`   // closed loop: in flight per sender; zero means 4
	Binary       bool          `json:"binary"`   // binary frames instead of text
	Duration     time.Duration `json:"duration"` // cap on each sending phase (soak: its length); zero means 60s (soak 10m)
	Hold         time.Duration `json:"hold"`     // density: idle time after connecting; zero means 5s
	DrainTimeout time.Duration `json:"drain_timeout"`
	Waves        int           `json:"waves"`       // churn; zero means 3
	ChurnClose   string        `json:"churn_close"` // churn: ws, abort or fin; zero means ws (soak: mixed, each in turn)
	Attackers    int           `json:"attackers"`   // slowloris; zero means as many as Conns (soak: hostile clients per round, 200)
	Attack       string        `json:"attack"`      // handshake, frame or both; zero means both
	Slow         int           `json:"slow"`        // slowconsumer; zero means 20 (soak: per round, 10)
	SlowRcvBuf   int           `json:"slow_rcvbuf"` // zero means 4096
	ProbeWait    time.Duration `json:"probe_wait"`  // slowconsumer: read the stalled ones this long; zero means 3s
	// Soak: slow consumers and hostile clients are replaced every Round
	// (zero means 15s; the warm-up is one round), and ChurnRate churn
	// cycles start per second (zero means 20).
	Round     time.Duration `json:"round"`
	ChurnRate float64       `json:"churn_rate"`
	// Recovery: each member is cut (its socket reset) once every CutEvery
	// (zero means 2s; the members' cuts are spread evenly over it) and
	// stays away CutDown (zero means 250ms) before it reconnects.
	CutEvery time.Duration `json:"cut_every,omitempty"`
	CutDown  time.Duration `json:"cut_down,omitempty"`
	// Recovery: every KillEvery one server process (node), in turn, is
	// SIGKILLed and started again on its port KillDown later (zero means
	// 500ms); its members reconnect to another node. Zero: no kills.
	KillEvery time.Duration `json:"kill_every,omitempty"`
	KillDown  time.Duration `json:"kill_down,omitempty"`

	// Protocol is raw (the /chat/{room} protocol) or pusher (Pusher
	// Channels: members subscribe at /app/{key}, senders publish through
	// the HTTP API); broadcast only. Two, comma-separated, give A the
	// first and B the second: B is the -compare server, or without
	// -compare the same server (command or URL) again. Zero means raw.
	Protocol  string `json:"protocol"`
	AppID     string `json:"app_id"`  // pusher: zero means chatd
	AppKey    string `json:"app_key"` // zero means chatd-key
	AppSecret string `json:"-"`       // zero means chatd-secret; kept out of -json
	Channel   string `json:"channel"` // public channel; zero means bench

	// Output.
	JSON     string    `json:"json,omitempty"`
	Plot     string    `json:"plot,omitempty"`
	Args     []string  `json:"args"`
	Stdout   io.Writer `json:"-"`
	Stderr   io.Writer `json:"-"`
	Progress *bool     `json:"-"` // nil: on when Stderr is a terminal

	// Version (-version): ParseArgs returns ErrVersion, and chatbench
	// prints its build instead of running.
	Version bool `json:"-"`
}

// Per-process and per-address budgets used for the defaults.
const (
	connsPerProc = 15000
	// connsPerSource: a connect without an explicit source port makes the
	// kernel search the ephemeral range for a free 4-tuple
	// (__inet_hash_connect), and the search gets longer as the range of
	// one source/destination pair fills: at 19,000 connections from one
	// address it took most of chatbench's CPU and held the connect rate
	// to ~7,000/s; over 4 addresses, ~17,000/s.
	connsPerSource = 5000
	fdMargin       = 64 // descriptors a process needs besides connections
	maxInstances   = 128
)

// Validate fills in defaults and checks the configuration.
func (c *Config) Validate() error {
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		return fmt.Errorf("chatbench: unknown scenario %q (one of %v)", c.Scenario, Scenarios)
	}
	if (c.URL == "") == (c.Server == "") {
		return errors.New("chatbench: give exactly one of -url ws://HOST:PORT (a running server) or -server 'CMD {addr}' (chatbench starts it)")
	}
	if err := c.validateInstances(); err != nil {
		return err
	}
	if c.ReusePort && c.Server == "" {
		return errors.New("chatbench: -reuse-port is for servers chatbench starts (-server): it gives all their -instances one port")
	}
	if c.MinAvailableMiB == 0 {
		c.MinAvailableMiB = 1024
	}
	for _, cmd := range []string{c.Server, c.Compare} {
		if cmd != "" && !containsAddr(cmd) {
			return fmt.Errorf("chatbench: server command %q has no {addr}; chatbench replaces {addr} with the 127.0.0.1:PORT it picked", cmd)
		}
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Repeat, 1)
	defD(&c.ServerTimeout, 60*time.Second)
	defD(&c.ConnectTimeout, 10*time.Second)
	if c.Scenario == "soak" {
		defD(&c.Duration, 10*time.Minute)
	}
	defD(&c.Duration, 60*time.Second)
	defD(&c.Hold, 5*time.Second)
	defD(&c.DrainTimeout, 5*time.Second)
	defD(&c.ProbeWait, 3*time.Second)
	def(&c.Concurrency, 256)
	def(&c.Rooms, 1)
	def(&c.Window, 4)
	def(&c.Waves, 3)
	def(&c.SlowRcvBuf, 4096)
	if c.Room == "" {
		c.Room = "bench"
	}
	switch c.Scenario {
	case "density":
		def(&c.Conns, 10000)
	case "broadcast":
		def(&c.Conns, 100)
		def(&c.Senders, 10)
		def(&c.Messages, 1000)
	case "churn":
		def(&c.Conns, 1000)
		def(&c.Senders, 1)
		def(&c.Messages, 10)
	case "slowloris":
		def(&c.Conns, 100)
		def(&c.Senders, 4)
		def(&c.Messages, 250)
		def(&c.Attackers, c.Conns)
	case "slowconsumer":
		def(&c.Conns, 100)
		def(&c.Senders, 4)
		// 4 x 500 x 4 KiB = 8 MiB offered to each slow member: more than
		// the kernel's socket buffers absorb (tcp_wmem max is 4 MiB), so
		// the server's own queue has to hold or drop the rest.
		def(&c.Messages, 500)
		def(&c.Size, 4096)
		def(&c.Slow, 20)
	case "soak":
		def(&c.Conns, 1000)
		def(&c.Senders, 4)
		def(&c.Slow, 10)
		def(&c.Attackers, 200)
		if c.Rate == 0 {
			c.Rate = 20
		}
		if c.ChurnRate == 0 {
			c.ChurnRate = 20
		}
		defD(&c.Round, 15*time.Second)
		if c.ChurnClose == "" {
			c.ChurnClose = CloseMixed
		}
	case "recovery":
		def(&c.Conns, 100)
		def(&c.Senders, 1)
		def(&c.Messages, 1000)
		if c.Rate == 0 {
			c.Rate = 100
		}
	}
	def(&c.Size, 128)
	if c.Size < PayloadHeaderSize {
		return fmt.Errorf("chatbench: -size %d is below the %d-byte payload header", c.Size, PayloadHeaderSize)
	}
	if err := c.validateRecovery(); err != nil {
		return err
	}
	if err := c.validateNATS(); err != nil {
		return err
	}
	if c.Instances > 1 && c.Scenario != "density" && !((c.Scenario == "broadcast" || c.Scenario == "recovery") && c.NATS != "") {
		also := ""
		if c.Scenario == "broadcast" || c.Scenario == "recovery" {
			also = ", or make the instances one cluster: -nats PATH-to-nats-server and {nats} in the -server command (chatd: -nats {nats})"
		}
		return fmt.Errorf("chatbench: %d server instances (-instances, or several -url): only the density scenario spreads over several instances, and broadcast and recovery over a cluster (-nats); %s needs its members in one room, and a room lives in one server process (members on different instances would not hear each other). Use one instance (one -url) for %s%s", c.Instances, c.Scenario, c.Scenario, also)
	}
	if err := c.validateFlood(); err != nil {
		return err
	}
	if c.Scenario != "density" && c.Rooms != 1 {
		return errors.New("chatbench: -rooms is for the density scenario; the others use one room")
	}
	if c.Scenario != "density" && c.Senders > c.Conns {
		return fmt.Errorf("chatbench: %d senders but only %d members (-conns)", c.Senders, c.Conns)
	}
	if c.Rate < 0 {
		return errors.New("chatbench: -rate must be >= 0")
	}
	if c.Attack == "" {
		c.Attack = "both"
	}
	if c.Attack != "both" && c.Attack != "handshake" && c.Attack != "frame" {
		return fmt.Errorf("chatbench: -attack %q: one of handshake, frame, both", c.Attack)
	}
	if c.ChurnClose == "" {
		c.ChurnClose = CloseWS
	}
	switch {
	case c.ChurnClose == CloseMixed && c.Scenario == "soak":
	case c.ChurnClose != CloseWS && c.ChurnClose != CloseAbort && c.ChurnClose != CloseFIN:
		also := ""
		if c.Scenario == "soak" {
			also = ", mixed"
		}
		return fmt.Errorf("chatbench: -churn-close %q: one of ws, abort, fin%s", c.ChurnClose, also)
	}
	if err := c.validateSoak(); err != nil {
		return err
	}
	if err := c.validateProtocol(); err != nil {
		return err
	}
	return c.planClients()
}

// Soak limits.
const (
	maxChurnRate     = 200 // cycles per second
	minSoakAttackers = 5   // one of each hostile kind
	maxChurnInFlight = 32
)

// validateFlood checks -senders-on and -readers-on, and fills in the
// default readers' instances.
func (c *Config) validateFlood() error {
	if c.SendersOn == 0 {
		if len(c.ReadersOn) > 0 {
			return errors.New("chatbench: -readers-on places the readers of a flood: give -senders-on N too (the instance all senders are on)")
		}
		return nil
	}
	if c.Scenario != "broadcast" || c.NATS == "" || c.Instances < 2 || c.ReusePort {
		return errors.New("chatbench: -senders-on is for broadcast over a cluster chatbench places the members on: -instances N (N >= 2) -nats PATH, without -reuse-port")
	}
	if c.SendersOn < 0 || c.SendersOn > c.Instances {
		return fmt.Errorf("chatbench: -senders-on %d: an instance between 1 and %d (-instances)", c.SendersOn, c.Instances)
	}
	if len(c.ReadersOn) == 0 {
		for k := 1; k <= c.Instances; k++ {
			if k != c.SendersOn {
				c.ReadersOn = append(c.ReadersOn, k)
			}
		}
	}
	seen := map[int]bool{}
	for _, k := range c.ReadersOn {
		if k < 1 || k > c.Instances {
			return fmt.Errorf("chatbench: -readers-on %d: an instance between 1 and %d (-instances)", k, c.Instances)
		}
		if seen[k] {
			return fmt.Errorf("chatbench: -readers-on lists instance %d twice", k)
		}
		seen[k] = true
	}
	if c.Conns <= c.Senders {
		return fmt.Errorf("chatbench: -senders-on: -conns %d leaves no readers after the %d senders (-conns counts both)", c.Conns, c.Senders)
	}
	return nil
}

// validateNATS checks -nats and {nats} in the server commands.
func (c *Config) validateNATS() error {
	var with, without []string // commands with and without {nats}
	for _, cmd := range []string{c.Server, c.Compare} {
		switch {
		case cmd == "":
		case strings.Contains(cmd, natsPlaceholder):
			with = append(with, cmd)
		default:
			without = append(without, cmd)
		}
	}
	if c.NATS == "" {
		if c.NATSJS {
			return errors.New("chatbench: -nats-js starts the nats-server of -nats with JetStream: give -nats PATH-to-nats-server too")
		}
		if len(with) > 0 {
			return fmt.Errorf("chatbench: server command %q has {nats} but no -nats PATH-to-nats-server was given: chatbench replaces {nats} with the URL of the nats-server it starts", with[0])
		}
		return nil
	}
	if c.Scenario != "broadcast" && c.Scenario != "recovery" {
		return fmt.Errorf("chatbench: -nats is for the broadcast and recovery scenarios (one room over a cluster of -instances), not %s", c.Scenario)
	}
	if c.URL != "" {
		return errors.New("chatbench: -nats starts a nats-server for the servers chatbench starts (-server 'CMD {addr} ... {nats}'); with -url the servers are yours, and so is their NATS")
	}
	if strings.Contains(c.Protocol, ProtocolPusher) && c.Scenario != "recovery" {
		return errors.New("chatbench: -nats is for -protocol raw: chatd's cluster carries raw rooms (/chat/{room}) between nodes, not Pusher channels")
	}
	if len(with) == 0 {
		return fmt.Errorf("chatbench: -nats %q but no server command has {nats}: put it where the server takes its NATS URL (chatd: -nats {nats})", c.NATS)
	}
	if c.Instances > 1 && len(without) > 0 {
		return fmt.Errorf("chatbench: -instances %d with -nats, but server command %q has no {nats}: its instances would not form a cluster, and members on different instances would not hear each other", c.Instances, without[0])
	}
	path, err := exec.LookPath(c.NATS)
	if err != nil {
		return fmt.Errorf("chatbench: -nats %q: not an executable nats-server (%v); build one with: go build -o nats-server github.com/nats-io/nats-server/v2", c.NATS, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	c.NATS = path
	return nil
}

// validateRecovery checks the recovery scenario's own flags.
func (c *Config) validateRecovery() error {
	if c.Scenario != "recovery" {
		if c.CutEvery != 0 || c.CutDown != 0 || c.KillEvery != 0 || c.KillDown != 0 {
			return fmt.Errorf("chatbench: -cut-every, -cut-down, -kill-every and -kill-down are for the recovery scenario, not %s", c.Scenario)
		}
		return nil
	}
	if c.ReusePort {
		return errors.New("chatbench: recovery spreads its members over the instances itself and moves them to another node when theirs dies: -reuse-port is not for it")
	}
	if c.KillEvery < 0 || c.KillDown < 0 {
		return errors.New("chatbench: -kill-every and -kill-down must be positive")
	}
	if c.KillEvery == 0 && c.KillDown != 0 {
		return errors.New("chatbench: -kill-down without -kill-every: say how often a node is killed")
	}
	if c.KillEvery > 0 {
		if c.URL != "" || c.Server == "" {
			return errors.New("chatbench: -kill-every kills and restarts the server processes chatbench started (-server); with -url they are yours")
		}
		if c.KillDown == 0 {
			c.KillDown = defaultKillDown
		}
		if c.KillDown >= c.KillEvery {
			return fmt.Errorf("chatbench: -kill-down %v must be shorter than -kill-every %v: a node is killed only once the last one is back", c.KillDown, c.KillEvery)
		}
	}
	if c.Procs > 1 {
		return errors.New("chatbench: recovery runs its members in chatbench's own process (-procs 1)")
	}
	c.Procs = 1
	if c.CutEvery == 0 {
		c.CutEvery = defaultCutEvery
	}
	if c.CutDown == 0 {
		c.CutDown = defaultCutDown
	}
	if c.CutEvery < 0 || c.CutDown < 0 {
		return errors.New("chatbench: -cut-every and -cut-down must be positive")
	}
	if c.CutDown >= c.CutEvery {
		return fmt.Errorf("chatbench: -cut-down %v must be shorter than -cut-every %v: a member is cut again only once it is back and caught up", c.CutDown, c.CutEvery)
	}
	if c.Rate <= 0 {
		return errors.New("chatbench: recovery publishes on a schedule: -rate must be above 0 (its default is 100 events/s)")
	}
	return nil
}

// validateSoak checks the soak's own flags.
func (c *Config) validateSoak() error {
	if c.Scenario != "soak" {
		if c.Round != 0 || c.ChurnRate != 0 {
			return fmt.Errorf("chatbench: -round and -churn-rate are for the soak scenario, not %s", c.Scenario)
		}
		return nil
	}
	if c.Round < c.ProbeWait+time.Second {
		return fmt.Errorf("chatbench: -round %v: a round must last at least -probe-wait (%v) + 1s, for the flood to reach its slow consumers and the probe to read them", c.Round, c.ProbeWait)
	}
	if c.Duration < c.Round {
		return fmt.Errorf("chatbench: -duration %v is shorter than one -round (%v): the soak runs whole rounds of slow consumers and hostile clients", c.Duration, c.Round)
	}
	if c.ChurnRate < 0 || c.ChurnRate > maxChurnRate {
		return fmt.Errorf("chatbench: -churn-rate %g: between 0 (the default, 20) and %d cycles per second; each cycle opens two connections, and those closed with fin keep their port in TIME_WAIT for 60s", c.ChurnRate, maxChurnRate)
	}
	if c.Slow < 2 {
		return fmt.Errorf("chatbench: -slow %d: the soak needs at least 2 slow consumers per round, one that never reads and one that reads slowly", c.Slow)
	}
	if c.Attackers < minSoakAttackers {
		return fmt.Errorf("chatbench: -attackers %d: the soak needs at least %d hostile clients per round, one of each kind (%v)", c.Attackers, minSoakAttackers, HostileKinds)
	}
	return nil
}

// soakHostile splits -attackers over the hostile kinds: a few plain HTTP
// requests with a stalled body (one per 50), the rest evenly.
func (c *Config) soakHostile() map[string]int {
	httpStalls := max(1, c.Attackers/50)
	out := map[string]int{KindHTTPStall: httpStalls}
	others := []string{KindStallHandshake, KindStallFrame, KindHalfClose, KindGarbage}
	for i, n := range split(c.Attackers-httpStalls, len(others)) {
		out[others[i]] = n
	}
	return out
}

// soakSlow splits -slow into slow consumers that never read and slow
// readers.
func (c *Config) soakSlow() (never, readers int) { return c.Slow - c.Slow/2, c.Slow / 2 }

// churnInFlight is how many soak churn cycles may run at once.
func (c *Config) churnInFlight() int { return max(1, min(c.Concurrency, maxChurnInFlight)) }

// validateInstances checks -url (a list), -pid and -instances.
func (c *Config) validateInstances() error {
	if c.Instances < 0 || c.Instances > maxInstances {
		return fmt.Errorf("chatbench: -instances %d: between 1 and %d", c.Instances, maxInstances)
	}
	if c.URL == "" {
		if len(c.PIDs) > 0 {
			return errors.New("chatbench: -pid is for -url servers; chatbench finds the processes it starts with -server itself")
		}
		if c.Instances == 0 {
			c.Instances = 1
		}
		return nil
	}
	urls := splitList(c.URL)
	if len(urls) == 0 {
		return fmt.Errorf("chatbench: -url %q names no server", c.URL)
	}
	seen := map[string]bool{}
	for _, u := range urls {
		addr, err := checkLoopbackURL(u)
		if err != nil {
			return err
		}
		if seen[addr] {
			return fmt.Errorf("chatbench: -url lists %s twice: each URL must be a different server instance", addr)
		}
		seen[addr] = true
	}
	if c.Instances == 0 {
		c.Instances = len(urls)
	}
	if c.Instances != len(urls) {
		return fmt.Errorf("chatbench: -instances %d but -url lists %d server(s): with -url the instances are the URLs (drop -instances, or list one URL per instance)", c.Instances, len(urls))
	}
	if len(c.PIDs) > 0 && len(c.PIDs) != len(urls) {
		return fmt.Errorf("chatbench: -pid lists %d process(es) for %d URL(s): give one per URL, in the same order (0 to find the listener), or none", len(c.PIDs), len(urls))
	}
	for _, pid := range c.PIDs {
		if pid < 0 {
			return fmt.Errorf("chatbench: -pid %d", pid)
		}
	}
	return nil
}

// validateProtocol checks -protocol and the Pusher flags.
func (c *Config) validateProtocol() error {
	if c.Scenario == "recovery" {
		if c.Protocol != "" && c.Protocol != ProtocolPusher {
			return fmt.Errorf("chatbench: -protocol %q: recovery runs over Pusher Channels only (positions and chatd_since)", c.Protocol)
		}
		c.Protocol = ProtocolPusher
	}
	if c.Protocol == "" {
		c.Protocol = ProtocolRaw
	}
	protos := strings.Split(c.Protocol, ",")
	if len(protos) > 2 {
		return fmt.Errorf("chatbench: -protocol %q: one protocol, or two (A,B) to compare", c.Protocol)
	}
	pusher := false
	for i, p := range protos {
		p = strings.TrimSpace(p)
		protos[i] = p
		switch p {
		case ProtocolRaw:
		case ProtocolPusher:
			pusher = true
		default:
			return fmt.Errorf("chatbench: -protocol %q: %q is neither raw nor pusher", c.Protocol, p)
		}
	}
	c.Protocol = strings.Join(protos, ",")
	if c.AppID == "" {
		c.AppID = DefaultPusherAppID
	}
	if c.AppKey == "" {
		c.AppKey = DefaultPusherAppKey
	}
	if c.AppSecret == "" {
		c.AppSecret = DefaultPusherAppSecret
	}
	if c.Channel == "" {
		c.Channel = DefaultPusherChannel
	}
	if !pusher {
		return nil
	}
	if c.Scenario != "broadcast" && c.Scenario != "recovery" {
		return fmt.Errorf("chatbench: -protocol pusher is for the broadcast and recovery scenarios, not %s", c.Scenario)
	}
	if c.Binary {
		return errors.New("chatbench: -binary does not apply to -protocol pusher: Pusher events are JSON text")
	}
	for _, f := range []struct{ flag, v string }{{"app-id", c.AppID}, {"app-key", c.AppKey}} {
		if strings.ContainsAny(f.v, "/?#% \t\r\n") {
			return fmt.Errorf("chatbench: -%s %q: no '/', '?', '#', '%%' or spaces", f.flag, f.v)
		}
	}
	return validPusherChannel(c.Channel)
}

// protocols returns the protocol of target A and of target B.
func (c *Config) protocols() (a, b string) {
	a, b, ok := strings.Cut(c.Protocol, ",")
	if !ok {
		b = a
	}
	if a == "" {
		a, b = ProtocolRaw, ProtocolRaw
	}
	return a, b
}

// twoProtocols reports whether -protocol names two (A,B); without
// -compare the one server then runs twice, once per protocol.
func (c *Config) twoProtocols() bool { return strings.Contains(c.Protocol, ",") }

func containsAddr(s string) bool {
	for i := 0; i+6 <= len(s); i++ {
		if s[i:i+6] == "{addr}" {
			return true
		}
	}
	return false
}

// totalConns is the most connections the client holds at once.
func (c *Config) totalConns() int {
	switch c.Scenario {
	case "slowloris":
		// honest members, late joiners under attack, attackers
		return c.Conns + lateJoiners(c.Conns) + c.Attackers
	case "slowconsumer":
		return c.Conns + c.Slow
	case "soak":
		// honest members, the busy room, a round of slow consumers and of
		// hostile clients, two connections per churn cycle in flight
		return c.Conns + 1 + busyReaders + c.Slow + c.Attackers + 2*c.churnInFlight()
	}
	if strings.Contains(c.Protocol, ProtocolPusher) {
		// One HTTP API connection per sender, and one for join probes.
		return c.Conns + c.Senders + 1
	}
	return c.Conns
}

// planClients picks -procs and -source-ips when not given and checks that
// the open-file limit fits the request, saying what to do when not.
func (c *Config) planClients() error {
	limit, err := RaiseOpenFileLimit()
	if err != nil {
		return fmt.Errorf("chatbench: reading the open-file limit: %w", err)
	}
	return c.planClientsFor(limit)
}

// planClientsFor is planClients for a given open-file limit per process.
func (c *Config) planClientsFor(limit int) error {
	total := c.totalConns()
	if c.Procs <= 0 {
		c.Procs = defaultProcs(total, limit)
	}
	if c.SourceIPs <= 0 {
		c.SourceIPs = max(1, (total+connsPerSource-1)/connsPerSource)
	}
	if c.SourceIPs > 250 {
		return errors.New("chatbench: -source-ips is at most 250 (127.0.0.1 to 127.0.0.250)")
	}
	perProc := (total + c.Procs - 1) / c.Procs
	if perProc+fdMargin > limit {
		need := (total + limit - fdMargin - 1) / (limit - fdMargin)
		return fmt.Errorf("chatbench: %d connections need %d descriptors per process with -procs %d, over the open-file limit of %d; use -procs %d or more (or raise the hard limit, ulimit -Hn)",
			total, perProc+fdMargin, c.Procs, limit, need)
	}
	return nil
}

// defaultProcs is how many client processes hold total connections: at
// most connsPerProc each, and fewer where the open-file limit (less a
// margin for everything else a process opens) is lower.
func defaultProcs(total, limit int) int {
	per := min(connsPerProc, limit-fdMargin)
	if per < 1 {
		per = 1
	}
	return max(1, (total+per-1)/per)
}

// sourceIPs lists the client addresses to spread connections over.
func (c *Config) sourceIPs() []string {
	if c.SourceIPs <= 1 {
		return nil
	}
	ips := make([]string, c.SourceIPs)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", i+1)
	}
	return ips
}

// lateJoiners is how many honest clients slowloris connects while the
// attackers stall, to see whether the server still accepts.
func lateJoiners(conns int) int { return max(1, min(conns/4, 50)) }
