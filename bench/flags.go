package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Usage is the synopsis printed by -h.
const Usage = `chatbench SCENARIO [flags]

Scenarios: density, broadcast, churn, slowloris, slowconsumer, soak, recovery (see bench/README.md).

Server under test: -url ws://127.0.0.1:PORT [-pid PID] [-metrics-addr HOST:PORT],
or -server 'CMD {addr}' (started on a free loopback port per run; {admin}, if
present, becomes a second free port, where chatbench scrapes /metrics: chatd
serves them on -admin-addr, so give it -admin-addr {admin}); -compare 'OTHER CMD {addr}' runs the
same scenario against a second server, alternating A, B, A, B over -repeat.
-instances N (density) starts N copies of each command, each on its own port,
and spreads the connections over them round-robin (a server process holds at
most ~19,900 connections here), or with -reuse-port all on one port, spread
by the kernel; -url takes a comma-separated list instead (-pid then one PID
per URL). Server figures are sums over the instances. -min-available MiB
stops a run before the machine runs short of memory.
-nats PATH (broadcast, recovery) starts that nats-server on a free loopback port for
each run and puts its URL where -server has {nats}: the instances form one
cluster, so broadcast spreads its room's members and senders over them too;
the nats-server counts among the server's processes. -nats-js runs it with
JetStream (-js -sd, a fresh directory per run), which chatd's cluster history
needs.
{hook} in -server/-compare (chatd: -publish-hook-url {hook}) starts a local
publish hook receiver for each run (chatbench itself, another process) that
answers every POST {"action":"allow"}, and becomes its URL; broadcast then
reports its POSTs and CPU apart from the server's.

-protocol pusher (broadcast): members subscribe over Pusher Channels protocol 7
and senders publish through the signed HTTP API; -protocol raw,pusher runs both
against the same -server command or -url (A raw, B pusher) and prints pusher/raw.

recovery (chatd history, issue 17): -conns members of one Pusher channel
(-app-key, -channel) while -senders publishers send -messages numbered events
each at -rate events/s in all through the signed HTTP API; each member's socket
is reset once every -cut-every (the members' cuts spread evenly), it stays away
-cut-down, reconnects and resubscribes with chatd_since set to the last
chatd_position it saw. Reports per member what was missed, duplicated or out of
order (all 0 for chatd), chatd:recovery_failed by code, and the time from
reconnect to caught up (p50/p99). Members run in chatbench's own process.
With -instances N -nats PATH -nats-js (chatd: -nats {nats}) the members are
spread over the N nodes of a cluster and the publishers over their HTTP APIs;
-kill-every D SIGKILLs one node every D, in turn, and starts it again on its
port -kill-down later: its members reconnect to another node with chatd_since
(catch-up after a node kill is reported on its own).

soak runs churn, a checked broadcast, slow consumers and hostile clients all at
once for -duration (default 10m) against one server and compares the server's
RSS, fds, sockets and threads before and after: PASS or FAIL (exit status 1).

Examples:
  chatbench density -conns 19000 -server './chatd -addr {addr} -admin-addr {admin}' -compare './baseline -addr {addr}'
  chatbench density -conns 38000 -instances 2 -server './chatd -addr {addr} -admin-addr {admin}' -compare './baseline -addr {addr}'
  chatbench broadcast -conns 1000 -senders 10 -messages 1000 -size 128 -url ws://127.0.0.1:8080
  chatbench broadcast -conns 9000 -senders 10 -messages 200 -protocol raw,pusher -repeat 3 -server './chatd -addr {addr} -admin-addr {admin} -log-level error'
  chatbench broadcast -conns 45000 -senders 10 -size 64 -instances 3 -nats ./nats-server -procs 3 -server './chatd -addr {addr} -admin-addr {admin} -log-level error -nats {nats}'
  chatbench broadcast -conns 50 -senders 10 -messages 5000 -rate 20000 -size 1024 -instances 3 -senders-on 1 -nats ./nats-server -nats-js -server './chatd -addr {addr} -admin-addr {admin} -log-level error -nats {nats}'
  chatbench recovery -conns 200 -messages 3000 -rate 100 -cut-every 2s -cut-down 250ms -server './chatd -addr {addr} -admin-addr {admin} -log-level error'
  chatbench recovery -conns 300 -messages 3000 -rate 100 -instances 3 -nats ./nats-server -nats-js -kill-every 3s -kill-down 500ms -server './chatd -addr {addr} -admin-addr {admin} -log-level error -nats {nats}'
  chatbench soak -duration 10m -server './chatd -addr {addr} -admin-addr {admin} -log-level error' -json soak.json
`

// FlagSet builds the flag set for cfg; ParseArgs uses it.
func FlagSet(cfg *Config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, Usage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Scenario, "scenario", "", "scenario (or give it as the first argument)")
	fs.StringVar(&cfg.URL, "url", "", "running server to load, ws://HOST:PORT on loopback; a comma-separated list for several instances (density)")
	fs.Var((*intList)(&cfg.PIDs), "pid", "with -url: server process to sample, one per URL, comma-separated (default: whoever listens on each port)")
	fs.StringVar(&cfg.Server, "server", "", "command starting the server under test; {addr} becomes 127.0.0.1:PORT, {admin} another free 127.0.0.1:PORT whose /metrics chatbench scrapes (chatd: -admin-addr {admin}), {hook} the URL of a local publish hook receiver that allows everything (chatd: -publish-hook-url {hook})")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "with -url: HOST:PORT serving the server's /metrics (chatd: its -admin-addr; default: the -url's own)")
	fs.StringVar(&cfg.Compare, "compare", "", "command starting a second server to compare with, as -server")
	fs.StringVar(&cfg.ServerName, "server-name", "", "label of the server under test (default: from the command)")
	fs.StringVar(&cfg.CompareName, "compare-name", "", "label of the -compare server")
	fs.DurationVar(&cfg.ServerTimeout, "server-timeout", 0, "how long a started server may take to listen (0: 60s)")
	fs.IntVar(&cfg.Repeat, "repeat", 0, "runs per server, alternating A and B (0: 1)")
	fs.IntVar(&cfg.Instances, "instances", 0, "density, and broadcast and recovery with -nats: start -server (and -compare) this many times, each on its own port, and spread connections over them round-robin (0: 1, or one per -url)")
	fs.BoolVar(&cfg.ReusePort, "reuse-port", false, "with -instances: start them all on one port (the command must share it: chatd -reuse-port) and let the kernel spread the connections; each instance's share is counted from its open fds")
	fs.IntVar(&cfg.MinAvailableMiB, "min-available", 0, "MiB: stop the run (kill the servers and client workers) when MemAvailable in /proc/meminfo falls under this (0: 1024; negative: no guard)")
	fs.StringVar(&cfg.NATS, "nats", "", "broadcast, recovery: path of a nats-server binary that chatbench starts on a free loopback port before the servers of each run; {nats} in -server/-compare becomes its URL, nats://127.0.0.1:PORT, so that the -instances form one cluster; its CPU and RSS count among the server's")
	fs.BoolVar(&cfg.NATSJS, "nats-js", false, "with -nats: start the nats-server with JetStream (-js -sd, a fresh temporary directory per run, removed after it), which chatd's cluster history needs")
	fs.IntVar(&cfg.SendersOn, "senders-on", 0, "broadcast over a cluster (-instances N -nats): a flood from one node: all -senders on instance N (from 1), the other -conns minus -senders members (readers) round-robin over -readers-on; reports members closed on the senders' instance and on the others (0: everyone round-robin)")
	fs.Var((*intList)(&cfg.ReadersOn), "readers-on", "with -senders-on: the instances the readers go to, comma-separated, round-robin (default: every instance but the senders'; the senders' own for the local baseline)")
	fs.IntVar(&cfg.Procs, "procs", 0, "client worker processes (0: one per 15,000 connections, fewer per process if the open-file limit is lower)")
	fs.IntVar(&cfg.SourceIPs, "source-ips", 0, "spread connections over 127.0.0.1..N (0: one per 20,000 connections)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "connection attempts in flight per process (0: 256)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 0, "TCP connect + upgrade limit per connection (0: 10s)")
	fs.IntVar(&cfg.Conns, "conns", 0, "connections, or members of the room (0: density 10000, churn 1000, soak 1000, others 100)")
	fs.IntVar(&cfg.Rooms, "rooms", 0, "density: spread connections over this many rooms (0: 1)")
	fs.StringVar(&cfg.Room, "room", "", "room name prefix (0: bench)")
	fs.IntVar(&cfg.Senders, "senders", 0, "members that send (0: broadcast 10, slowloris/slowconsumer/soak 4, churn check 1)")
	fs.IntVar(&cfg.Messages, "messages", 0, "messages per sender (0: broadcast 1000, slowloris 250, slowconsumer 500, churn check 10)")
	fs.IntVar(&cfg.Size, "size", 0, "bytes per message, at least 44 (0: 128; slowconsumer 4096)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: messages per second over all senders (0: closed loop; soak 20)")
	fs.IntVar(&cfg.Window, "window", 0, "closed loop: messages in flight per sender (0: 4)")
	fs.BoolVar(&cfg.Binary, "binary", false, "send binary frames (default text)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "cap on each sending phase, and with -connect-timeout on each batch of connects (0: 60s); soak: how long it runs, after a warm-up round (0: 10m)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "density: hold the connections idle this long (0: 5s)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "stop waiting for deliveries after this long without progress (0: 5s)")
	fs.IntVar(&cfg.Waves, "waves", 0, "churn: disconnect/reconnect waves (0: 3)")
	fs.StringVar(&cfg.ChurnClose, "churn-close", "", "churn: how clients drop: ws (close handshake), abort (RST), fin (0: ws); soak also mixed, each in turn (its default)")
	fs.IntVar(&cfg.Attackers, "attackers", 0, "slowloris: stalled connections (0: as many as -conns); soak: hostile clients per round (0: 200)")
	fs.StringVar(&cfg.Attack, "attack", "", "slowloris: handshake, frame or both (0: both)")
	fs.IntVar(&cfg.Slow, "slow", 0, "slowconsumer: members that never read (0: 20); soak: per round (0: 10)")
	fs.IntVar(&cfg.SlowRcvBuf, "slow-rcvbuf", 0, "slowconsumer, soak: SO_RCVBUF of the slow members (0: 4096)")
	fs.DurationVar(&cfg.ProbeWait, "probe-wait", 0, "slowconsumer, soak: read the slow members this long afterwards (0: 3s)")
	fs.DurationVar(&cfg.Round, "round", 0, "soak: slow consumers and hostile clients are replaced this often; the warm-up is one round (0: 15s)")
	fs.DurationVar(&cfg.CutEvery, "cut-every", 0, "recovery: cut each member (reset its socket) once this often, the members' cuts spread evenly over it (0: 2s)")
	fs.DurationVar(&cfg.CutDown, "cut-down", 0, "recovery: a cut member stays away this long before it reconnects with chatd_since (0: 250ms)")
	fs.DurationVar(&cfg.KillEvery, "kill-every", 0, "recovery: SIGKILL one server process (node) this often, each in turn, and start it again on its port -kill-down later; its members reconnect to another node with chatd_since (0: no kills)")
	fs.DurationVar(&cfg.KillDown, "kill-down", 0, "recovery: a killed node stays down this long before chatbench starts it again (0: 500ms)")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", 0, "soak: churn cycles (two clients connect, exchange a message, leave) started per second (0: 20)")
	fs.StringVar(&cfg.Protocol, "protocol", "", "broadcast: raw (/chat/{room}) or pusher (subscribe at /app/{key}, publish through the HTTP API); raw,pusher runs both, A and B, and prints pusher/raw (0: raw)")
	fs.StringVar(&cfg.AppID, "app-id", "", "pusher: app_id of the HTTP API (0: chatd)")
	fs.StringVar(&cfg.AppKey, "app-key", "", "pusher: app key members connect with (0: chatd-key)")
	fs.StringVar(&cfg.AppSecret, "app-secret", "", "pusher: app secret that signs HTTP API requests (0: chatd-secret)")
	fs.StringVar(&cfg.Channel, "channel", "", "pusher: public channel to subscribe and publish to (0: bench)")
	fs.StringVar(&cfg.JSON, "json", "", "write every figure and the arguments to this JSON file")
	fs.StringVar(&cfg.Plot, "plot", "", "draw the latency distribution (and RSS per connections) to this SVG file")
	fs.BoolVar(&cfg.Version, "version", false, "print the build (module version, VCS revision and time, dirty flag, Go version) and exit")
	return fs
}

// ErrVersion is ParseArgs's answer to -version: print the build
// (chatd/server/buildinfo) and exit.
var ErrVersion = errors.New("chatbench: -version")

// ParseArgs turns a command line (without the program name) into a Config.
func ParseArgs(args []string, out io.Writer) (Config, error) {
	cfg := Config{Args: append([]string{"chatbench"}, args...)}
	fs := FlagSet(&cfg, out)
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cfg.Scenario = args[0]
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("chatbench: unexpected argument %q", fs.Arg(0))
	}
	if cfg.Version {
		return cfg, ErrVersion
	}
	if cfg.Scenario == "" {
		fs.Usage()
		return cfg, errors.New("chatbench: no scenario given")
	}
	return cfg, nil
}

// intList is a flag.Value for a comma-separated list of integers.
type intList []int

func (l *intList) String() string {
	if l == nil {
		return ""
	}
	parts := make([]string, len(*l))
	for i, v := range *l {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not a number", f)
		}
		out = append(out, v)
	}
	*l = out
	return nil
}
