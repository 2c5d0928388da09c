package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Report is everything one invocation measured; -json writes it whole.
type Report struct {
	Tool     string       `json:"tool"`
	Args     []string     `json:"args"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Machine  Machine      `json:"machine"`
	Config   Config       `json:"config"`
	Targets  []*target    `json:"targets"`
	Runs     []*RunResult `json:"runs"`
	Summary  []Summary    `json:"summary"`
}

// Machine describes where the figures were taken.
type Machine struct {
	Cores         int    `json:"cores"`
	MemoryBytes   int64  `json:"memory_bytes"`
	Kernel        string `json:"kernel"`
	OpenFileLimit int    `json:"open_file_limit"`
	Go            string `json:"go"`
}

// maxInstanceRows: with more server instances than this, the table gives
// the spread over them (min, max) instead of a row per instance.
const maxInstanceRows = 8

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemoryBytes = kb << 10
				}
			}
		}
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		m.OpenFileLimit = int(rl.Cur)
	}
	return m
}

func newReport(cfg Config, targets []*target) *Report {
	args := cfg.Args
	if args == nil {
		args = os.Args
	}
	args = redactSecret(args)
	return &Report{Tool: "chatbench", Args: args, Started: time.Now(), Machine: machine(), Config: cfg, Targets: targets}
}

// redactSecret hides the value of -app-secret in the recorded arguments
// (unless it is chatd's published default).
func redactSecret(args []string) []string {
	out := append([]string(nil), args...)
	for i, a := range out {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "app-secret" {
			continue
		}
		if hasVal {
			if val != DefaultPusherAppSecret {
				out[i] = a[:len(a)-len(val)] + "REDACTED"
			}
		} else if i+1 < len(out) && out[i+1] != DefaultPusherAppSecret {
			out[i+1] = "REDACTED"
		}
	}
	return out
}

// RunResult is one scenario run against one server.
type RunResult struct {
	Target              string              `json:"target"` // A or B
	Name                string              `json:"name"`
	Repeat              int                 `json:"repeat"`
	URL                 string              `json:"url"` // comma-separated with several instances
	PID                 int                 `json:"pid,omitempty"`
	Instances           int                 `json:"instances"`
	PIDs                []int               `json:"pids,omitempty"`     // per instance
	NATSURL             string              `json:"nats_url,omitempty"` // -nats: the nats-server started for the run
	NATSPID             int                 `json:"nats_pid,omitempty"`
	HaveServer          bool                `json:"have_server_stats"`
	ServerOpenFileLimit int                 `json:"server_open_file_limit,omitempty"`
	Started             time.Time           `json:"started"`
	Seconds             float64             `json:"seconds"`
	ClientCPU           float64             `json:"client_cpu_seconds"`
	Density             *DensityResult      `json:"density,omitempty"`
	Broadcast           *PhaseResult        `json:"broadcast,omitempty"`
	Churn               *ChurnResult        `json:"churn,omitempty"`
	Slowloris           *SlowlorisResult    `json:"slowloris,omitempty"`
	SlowConsumer        *SlowConsumerResult `json:"slowconsumer,omitempty"`
	Soak                *SoakResult         `json:"soak,omitempty"`
	Recovery            *RecoveryResult     `json:"recovery,omitempty"`
	Metrics             []Metric            `json:"metrics"`
	Notes               []string            `json:"notes,omitempty"`
	Error               string              `json:"error,omitempty"`
	ServerOutput        string              `json:"server_output,omitempty"`
}

// Metric is one headline figure of a run, as printed in the table.
type Metric struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"`
	Server bool    `json:"server"` // needs server process stats
}

const (
	mib = 1 << 20
	kib = 1 << 10
)

func (run *RunResult) metrics() []Metric {
	var ms []Metric
	add := func(name, unit string, v float64) { ms = append(ms, Metric{Name: name, Unit: unit, Value: v}) }
	srv := func(name, unit string, v float64) {
		ms = append(ms, Metric{Name: name, Unit: unit, Value: v, Server: true})
	}
	// stressRows: what slowloris and slowconsumer share, the clean phase
	// against the stressed one (rows named name, the ratio row ratioName).
	stressRows := func(name, ratioName string, clean, loaded *PhaseResult, ratio float64) {
		add("clean loss", "%", clean.LossPercent)
		add("clean latency p99", "ms", clean.Latency.P99)
		add(name+" loss", "%", loaded.LossPercent)
		add(name+" lost", "", float64(loaded.Deliveries.Lost))
		add(name+" latency p99", "ms", loaded.Latency.P99)
		add("p99 "+ratioName+" / clean", "x", ratio)
		add(name+" deliveries/s", "", loaded.DeliveriesPerSec)
	}
	phase := func(prefix string, p *PhaseResult) {
		add(prefix+"members", "", float64(p.Members))
		add(prefix+"messages sent", "", float64(p.Deliveries.Sent))
		add(prefix+"deliveries expected", "", float64(p.Deliveries.Expected))
		add(prefix+"deliveries received", "", float64(p.Deliveries.Received))
		add(prefix+"lost", "", float64(p.Deliveries.Lost))
		add(prefix+"loss", "%", p.LossPercent)
		add(prefix+"duplicates", "", float64(p.Deliveries.Duplicates))
		add(prefix+"corrupt", "", float64(p.Deliveries.Corrupt))
		add(prefix+"reordered", "", float64(p.Deliveries.Reordered))
		add(prefix+"latency p50", "ms", p.Latency.P50)
		add(prefix+"latency p90", "ms", p.Latency.P90)
		add(prefix+"latency p99", "ms", p.Latency.P99)
		add(prefix+"latency p99.9", "ms", p.Latency.P999)
		add(prefix+"latency max", "ms", p.Latency.Max)
		add(prefix+"deliveries/s", "", p.DeliveriesPerSec)
		srv(prefix+"server CPU", "s", p.ServerCPU)
		srv(prefix+"server CPU per delivery", "µs", p.CPUPerDelivery)
		srv(prefix+"server RSS peak", "MiB", float64(p.RSSPeak)/mib)
		add(prefix+"members closed by server", "", float64(p.MembersClosed))
		if p.Instances > 1 && len(p.SenderInstances) > 0 {
			add(prefix+"members closed on senders' instances", "", float64(p.MembersClosedSenderInst))
			add(prefix+"members closed on other instances", "", float64(p.MembersClosedOther))
		}
		if p.Hook {
			add(prefix+"hook POSTs", "", float64(p.HookPosts))
			add(prefix+"hook receiver CPU", "s", p.HookCPU)
			add(prefix+"hook receiver CPU per delivery", "µs", p.HookCPUPerDelivery)
			srv(prefix+"server + hook receiver CPU per delivery", "µs", p.ServerAndHookPerDeliv)
		}
	}
	switch {
	case run.Density != nil:
		d := run.Density
		add("connections opened", "", float64(d.Connect.Opened))
		add("connections failed", "", float64(d.Connect.Failed))
		add("open after hold", "", float64(d.OpenAfterHold))
		add("connect time", "s", d.Connect.Seconds)
		add("connect rate", "conn/s", d.Connect.Rate)
		add("connect p50", "ms", d.Connect.Latency.P50)
		add("connect p99", "ms", d.Connect.Latency.P99)
		srv("server RSS before", "MiB", float64(d.RSSBefore)/mib)
		srv("server RSS after hold", "MiB", float64(d.RSSAfterHold)/mib)
		srv("server RSS per connection", "KiB", d.RSSPerConn/kib)
		srv("server CPU per connect", "µs", d.CPUPerConnect)
		srv("server idle CPU", "%", d.IdleCPUPercent)
		srv("server fds", "", float64(d.FDsAfter))
		srv("server threads", "", float64(d.ThreadsAfter))
		add("kernel slab per connection", "KiB", d.KernelSlabPerConn/kib)
		add("kernel TCP buffers per connection", "KiB", d.KernelTCPMemPerCon/kib)
		add("TCP sockets after hold", "", float64(d.KernelAfterHold.TCPInUse))
		add("MemAvailable after hold", "MiB", float64(d.KernelAfterHold.MemAvailable)/mib)
		add("client RSS per connection", "KiB", d.ClientRSSPerConn/kib)
		add("client CPU per connect", "µs", d.Connect.ClientCPUPerConnect)
		if n := len(d.Instances); n > 1 && n <= maxInstanceRows {
			add("server instances", "", float64(n))
			for k, x := range d.Instances {
				add(fmt.Sprintf("instance %d connections", k+1), "", float64(x.Opened))
			}
			for k, x := range d.Instances {
				srv(fmt.Sprintf("instance %d RSS per connection", k+1), "KiB", x.RSSPerConn/kib)
			}
		} else if n > maxInstanceRows {
			// Too many for a row each: the spread.
			add("server instances", "", float64(n))
			lo, hi := d.Instances[0], d.Instances[0]
			rlo, rhi := lo.RSSPerConn, lo.RSSPerConn
			for _, x := range d.Instances {
				if x.Opened < lo.Opened {
					lo = x
				}
				if x.Opened > hi.Opened {
					hi = x
				}
				rlo, rhi = min(rlo, x.RSSPerConn), max(rhi, x.RSSPerConn)
			}
			add("instance connections min", "", float64(lo.Opened))
			add("instance connections max", "", float64(hi.Opened))
			srv("instance RSS per connection min", "KiB", rlo/kib)
			srv("instance RSS per connection max", "KiB", rhi/kib)
		}
	case run.Broadcast != nil:
		p := run.Broadcast
		phase("", p)
		if p.Instances > 1 {
			add("server instances", "", float64(p.Instances))
			if len(p.SenderInstances) > 0 {
				// Unknown when the kernel placed the members (-reuse-port).
				add("deliveries across instances", "", float64(p.CrossInstance))
			}
		}
		if len(p.Processes) <= maxInstanceRows+1 {
			for _, x := range p.Processes {
				srv(x.Name+" CPU", "s", x.CPU)
			}
		} else {
			// Too many for a row each: the instances' spread, and the rest.
			lo, hi := -1.0, 0.0
			for _, x := range p.Processes {
				if !strings.HasPrefix(x.Name, "instance ") {
					srv(x.Name+" CPU", "s", x.CPU)
					continue
				}
				if lo < 0 || x.CPU < lo {
					lo = x.CPU
				}
				hi = max(hi, x.CPU)
			}
			srv("instance CPU min", "s", lo)
			srv("instance CPU max", "s", hi)
		}
	case run.Churn != nil:
		c := run.Churn
		add("connections", "", float64(c.Initial.Requested))
		add("initial connect time", "s", c.Initial.Seconds)
		var worst, sum, p99 float64
		for _, w := range c.Waves {
			worst = max(worst, w.Reconnect.Seconds)
			sum += w.Reconnect.Seconds
			p99 = max(p99, w.Reconnect.Latency.P99)
		}
		add("waves", "", float64(len(c.Waves)))
		if len(c.Waves) > 0 {
			add("reconnect time mean", "s", sum/float64(len(c.Waves)))
		}
		add("reconnect time max", "s", worst)
		add("reconnect p99 (worst wave)", "ms", p99)
		add("reconnect failures", "", float64(c.Failures))
		if c.Check != nil {
			add("after-churn broadcast lost", "", float64(c.Check.Deliveries.Lost))
		}
		srv("server fds before", "", float64(c.FDsBefore))
		srv("server fds after close", "", float64(c.FDsAfterClose))
		srv("server RSS after", "MiB", float64(c.RSSAfter)/mib)
	case run.Slowloris != nil:
		s := run.Slowloris
		stressRows("attacked", "attacked", s.Clean, s.Attacked, s.P99Ratio)
		add("late joiners connected", "", float64(s.LateJoin.Opened))
		add("late joiners failed", "", float64(s.LateJoin.Failed))
		add("late join p99", "ms", s.LateJoin.Latency.P99)
		add("attackers stalling", "", float64(s.Attackers.Established))
		add("attackers open at start", "", float64(s.Attackers.OpenAtStart))
		add("attackers open at end", "", float64(s.Attackers.OpenAtEnd))
		srv("attacked server CPU per delivery", "µs", s.Attacked.CPUPerDelivery)
	case run.SlowConsumer != nil:
		s := run.SlowConsumer
		stressRows("with-slow", "with slow", s.Clean, s.Loaded, s.P99Ratio)
		add("slow consumers", "", float64(s.Established))
		add("slow stalled", "", float64(s.Stalled))
		add("slow closed by server", "", float64(s.Fates.Total-s.Fates.Fates["open"]))
		add("slow backlog max", "KiB", float64(s.Fates.MaxBytes)/kib)
		srv("server RSS growth", "MiB", float64(s.RSSGrowth)/mib)
		srv("server RSS after", "MiB", float64(s.RSSAfter)/mib)
		srv("with-slow server CPU per delivery", "µs", s.Loaded.CPUPerDelivery)
	case run.Soak != nil:
		ms = append(ms, run.Soak.metrics()...)
	case run.Recovery != nil:
		x := run.Recovery
		add("members", "", float64(x.Members))
		add("events published", "", float64(x.Published))
		if x.Nodes > 1 || x.Kills > 0 {
			add("nodes", "", float64(x.Nodes))
			add("node kills", "", float64(x.Kills))
		}
		add("cuts", "", float64(x.Cuts))
		add("reconnects", "", float64(x.Reconnects))
		if x.Kills > 0 || x.ServerClosed > 0 {
			add("closed by the server", "", float64(x.ServerClosed))
		}
		add("events replayed", "", float64(x.Replayed))
		add("most replayed at one reconnect", "", float64(x.ReplayMax))
		add("events received", "", float64(x.Received))
		add("missed", "", float64(x.Missed))
		add("duplicated", "", float64(x.Duplicates))
		add("out of order", "", float64(x.OutOfOrder))
		add("corrupt", "", float64(x.Corrupt))
		add("position breaks", "", float64(x.PositionBreaks))
		add("members with every event once, in order", "", float64(x.CleanMembers))
		add("chatd:recovery_failed", "", float64(x.RecoveryFailed))
		add("catch-up p50", "ms", x.CatchUp.P50)
		add("catch-up p99", "ms", x.CatchUp.P99)
		add("catch-up max", "ms", x.CatchUp.Max)
		if x.Kills > 0 || x.KillCatchUp.Count > 0 {
			add("catch-up after a server close p50", "ms", x.KillCatchUp.P50)
			add("catch-up after a server close p99", "ms", x.KillCatchUp.P99)
			add("catch-up after a server close max", "ms", x.KillCatchUp.Max)
		}
		add("publish errors", "", float64(x.SendErrors))
		add("failed reconnects", "", float64(x.ConnectFails))
		srv("server CPU", "s", x.ServerCPU)
		srv("server RSS peak", "MiB", float64(x.RSSPeak)/mib)
	}
	add("client CPU", "s", run.ClientCPU)
	return ms
}

// Summary is one metric across runs: the median per server and B/A.
type Summary struct {
	Name   string             `json:"name"`
	Unit   string             `json:"unit"`
	Median map[string]float64 `json:"median"` // by target label
	Ratio  float64            `json:"ratio_b_over_a,omitempty"`
	Server bool               `json:"server"`
}

func (r *Report) summarize() {
	r.Summary = nil
	index := map[string]int{}
	values := map[string]map[string][]float64{}
	for _, run := range r.Runs {
		for _, m := range run.Metrics {
			if m.Server && !run.HaveServer {
				continue
			}
			if _, ok := index[m.Name]; !ok {
				index[m.Name] = len(r.Summary)
				r.Summary = append(r.Summary, Summary{Name: m.Name, Unit: m.Unit, Median: map[string]float64{}, Server: m.Server})
				values[m.Name] = map[string][]float64{}
			}
			values[m.Name][run.Target] = append(values[m.Name][run.Target], m.Value)
		}
	}
	for i := range r.Summary {
		s := &r.Summary[i]
		for label, xs := range values[s.Name] {
			s.Median[label] = median(xs)
		}
		a, okA := s.Median["A"]
		b, okB := s.Median["B"]
		if okA && okB && a != 0 {
			s.Ratio = b / a
		}
	}
}

// describe is the one-line account of what was run.
func (r *Report) describe() string {
	c := r.Config
	var what string
	switch c.Scenario {
	case "density":
		what = fmt.Sprintf("%d idle connections in %d room(s), held %v", c.Conns, c.Rooms, c.Hold)
	case "broadcast", "churn", "slowloris", "slowconsumer":
		mode := fmt.Sprintf("closed loop (window %d)", c.Window)
		if c.Rate > 0 {
			mode = fmt.Sprintf("open loop at %.0f msg/s", c.Rate)
		}
		what = fmt.Sprintf("%d members, %d senders x %d messages of %d B, %s", c.Conns, c.Senders, c.Messages, c.Size, mode)
		if strings.Contains(c.Protocol, ProtocolPusher) {
			a, b := c.protocols()
			proto := "protocol " + a
			if a != b {
				proto = fmt.Sprintf("protocol %s (A) vs %s (B)", a, b)
			}
			what += fmt.Sprintf("; %s; pusher: app %s, public channel %s, members subscribe at /app/%s?protocol=7, senders publish through POST /apps/%s/events (keep-alive)",
				proto, c.AppID, c.Channel, c.AppKey, c.AppID)
		}
		switch c.Scenario {
		case "churn":
			what = fmt.Sprintf("%d connections, %d reconnect waves (close: %s), then %s", c.Conns, c.Waves, c.ChurnClose, what)
		case "slowloris":
			what += fmt.Sprintf("; %d attackers (%s)", c.Attackers, c.Attack)
		case "slowconsumer":
			what += fmt.Sprintf("; %d slow consumers (SO_RCVBUF %d)", c.Slow, c.SlowRcvBuf)
		}
	case "recovery":
		what = fmt.Sprintf("%d members of Pusher channel %s (app %s), %d publisher(s) x %d events of %d B at %.0f events/s in all (POST /apps/%s/events); each member reset once every %v (spread evenly), away %v, then resubscribed with chatd_since",
			c.Conns, c.Channel, c.AppID, c.Senders, c.Messages, c.Size, c.Rate, c.AppID, c.CutEvery, c.CutDown)
		if c.KillEvery > 0 {
			what += fmt.Sprintf("; every %v one node in turn SIGKILLed and started again on its port %v later, its members reconnecting to the next node up with chatd_since", c.KillEvery, c.KillDown)
		}
	case "soak":
		h := c.soakHostile()
		never, readers := c.soakSlow()
		kinds := make([]string, 0, len(HostileKinds))
		for _, k := range HostileKinds {
			kinds = append(kinds, fmt.Sprintf("%d %s", h[k], k))
		}
		what = fmt.Sprintf("%v after a warm-up round, all at once: %d members in one room, %d senders at %.0f msg/s of %d B in all; a busy room (%d readers; a flooder sends %d messages of %d KiB back to back half a round in) that %d slow consumers join every %v round (SO_RCVBUF %d; %d never read, %d read %d KiB/s); %g churn cycles/s (close: %s, at most %d at once); every round %d hostile clients (%s)",
			c.Duration, c.Conns, c.Senders, c.Rate, c.Size, busyReaders, floodBurst, floodSize/kib, c.Slow, c.Round, c.SlowRcvBuf, never, readers, slowReadRate/kib,
			c.ChurnRate, c.ChurnClose, c.churnInFlight(), c.Attackers, strings.Join(kinds, ", "))
	}
	servers := ""
	spread := "round-robin"
	if c.ReusePort {
		spread = "by the kernel over one port (-reuse-port)"
	}
	switch {
	case c.NATS != "" && c.SendersOn > 0:
		servers = fmt.Sprintf("; servers: %d instance(s) + nats-server per server (a cluster through NATS; a flood from one node: the %d senders on instance %d, the %d readers round-robin over instances %s), server figures summed over all %d processes",
			c.Instances, c.Senders, c.SendersOn, c.Conns-c.Senders, senderInstances(minus1(c.ReadersOn)), c.Instances+1)
	case c.NATS != "":
		servers = fmt.Sprintf("; servers: %d instance(s) + nats-server per server (a cluster through NATS; members and senders spread %s over the instances), server figures summed over all %d processes", c.Instances, spread, c.Instances+1)
	case c.Instances > 1:
		servers = fmt.Sprintf("; %d server instances per server, connections spread %s, server figures summed over them", c.Instances, spread)
	}
	return fmt.Sprintf("chatbench %s: %s%s; %d client process(es), %d source address(es); %d cores, %.1f GiB, open files %d",
		c.Scenario, what, servers, c.Procs, c.SourceIPs, r.Machine.Cores, float64(r.Machine.MemoryBytes)/(1<<30), r.Machine.OpenFileLimit)
}

// WriteTable prints the summary table and each run's details.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintln(w, r.describe())
	labels := []string{}
	for _, t := range r.Targets {
		labels = append(labels, t.Label)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "metric\t"
	for _, t := range r.Targets {
		head += fmt.Sprintf("%s: %s\t", t.Label, t.Name)
	}
	if len(labels) == 2 {
		head += "B/A\t"
	}
	fmt.Fprintln(tw, head)
	for _, s := range r.Summary {
		name := s.Name
		if s.Unit != "" {
			name += " (" + s.Unit + ")"
		}
		line := name + "\t"
		for _, l := range labels {
			if v, ok := s.Median[l]; ok {
				line += formatValue(v) + "\t"
			} else {
				line += "n/a\t"
			}
		}
		if len(labels) == 2 {
			if s.Ratio != 0 {
				line += fmt.Sprintf("%.2fx\t", s.Ratio)
			} else {
				line += "-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if r.Config.Repeat > 1 {
		fmt.Fprintf(w, "(medians of %d runs per server, run alternately A, B, A, B)\n", r.Config.Repeat)
	}
	if len(r.Targets) == 2 && r.Targets[0].Protocol != r.Targets[1].Protocol {
		a, b := r.Targets[0].Protocol, r.Targets[1].Protocol
		for _, s := range r.Summary {
			if s.Name == "server CPU per delivery" && s.Ratio != 0 {
				fmt.Fprintf(w, "%s/%s server CPU per delivery: %.2fx (B/A; below 1 means %s costs the server less per delivery)\n", b, a, s.Ratio, b)
			}
		}
	}
	for _, run := range r.Runs {
		for _, d := range run.details() {
			fmt.Fprintf(w, "  %s#%d %s: %s\n", run.Target, run.Repeat, run.Name, d)
		}
	}
}

// senderInstances lists each sender's instance, counted from 1.
func senderInstances(inst []int) string {
	parts := make([]string, len(inst))
	for i, k := range inst {
		parts[i] = strconv.Itoa(k + 1)
	}
	return strings.Join(parts, ",")
}

// minus1 counts instances from 0 again (senderInstances adds the 1).
func minus1(l []int) []int {
	out := make([]int, len(l))
	for i, k := range l {
		out[i] = k - 1
	}
	return out
}

func formatValue(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v == float64(int64(v)) && v < 1e12:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// details are the per-run facts that do not fit the metric table.
func (run *RunResult) details() []string {
	var out []string
	out = append(out, run.Notes...)
	if run.Error != "" {
		out = append(out, "error: "+run.Error)
	}
	open := func(what string, o *OpenSummary) {
		if o != nil && o.Failed > 0 {
			out = append(out, fmt.Sprintf("%s failures: %s (first: %s)", what, formatCounts(o.Errors), o.FirstError))
		}
	}
	phase := func(what string, p *PhaseResult) {
		if p == nil {
			return
		}
		if p.MembersClosed > 0 {
			out = append(out, fmt.Sprintf("%s: members closed by the server: %s", what, formatCounts(p.CloseHow)))
		}
		if p.NotJoined > 0 {
			out = append(out, fmt.Sprintf("%s: %d members never received room traffic before the phase (not in the room?)", what, p.NotJoined))
		}
		if p.SendErrors > 0 || p.AckTimeouts > 0 || p.Stray > 0 {
			out = append(out, fmt.Sprintf("%s: send errors %d, closed-loop waits timed out %d, stray messages %d", what, p.SendErrors, p.AckTimeouts, p.Stray))
		}
		if p.FirstSendError != "" {
			out = append(out, fmt.Sprintf("%s: first send error: %s", what, p.FirstSendError))
		}
	}
	switch {
	case run.Density != nil:
		open("connect", run.Density.Connect)
		for k, x := range run.Density.Instances {
			line := fmt.Sprintf("instance %d (%s", k+1, x.URL)
			if x.PID != 0 {
				line += fmt.Sprintf(", pid %d", x.PID)
			}
			line += fmt.Sprintf("): %d connections opened, %d open after hold", x.Opened, x.OpenAfterHold)
			if run.HaveServer {
				line += fmt.Sprintf("; RSS %.1f -> %.1f MiB (%.2f KiB per connection), CPU connecting %.2fs, fds %d, threads %d",
					float64(x.RSSBefore)/mib, float64(x.RSSAfterHold)/mib, x.RSSPerConn/kib, x.CPUConnect, x.FDsAfter, x.ThreadsAfter)
			}
			out = append(out, line)
		}
	case run.Broadcast != nil:
		p := run.Broadcast
		phase("broadcast", p)
		if p.Instances > 1 && len(p.SenderInstances) > 0 && len(p.FloodReaders) > 0 {
			out = append(out, fmt.Sprintf("flood: all %d senders on instance %d, the readers round-robin over instances %s; members closed by the server: %d on the senders' instance, %d on other instances; %d of %d deliveries crossed from the sender's instance to another",
				p.Senders, p.SenderInstances[0]+1, senderInstances(minus1(p.FloodReaders)), p.MembersClosedSenderInst, p.MembersClosedOther, p.CrossInstance, p.Deliveries.Received))
		} else if p.Instances > 1 && len(p.SenderInstances) > 0 {
			out = append(out, fmt.Sprintf("members and senders spread round-robin over %d instances; senders on instances %s; %d of %d deliveries crossed from the sender's instance to another",
				p.Instances, senderInstances(p.SenderInstances), p.CrossInstance, p.Deliveries.Received))
		} else if p.Instances > 1 {
			out = append(out, fmt.Sprintf("members spread by the kernel over %d instances on one port (-reuse-port); which instance holds a sender is not known", p.Instances))
		}
		for _, x := range p.Processes {
			out = append(out, fmt.Sprintf("%s (pid %d): CPU %.2fs, RSS after %.1f MiB", x.Name, x.PID, x.CPU, float64(x.RSSAfter)/mib))
		}
	case run.Churn != nil:
		open("initial connect", run.Churn.Initial)
		for _, w := range run.Churn.Waves {
			out = append(out, fmt.Sprintf("wave %d: disconnect %.2fs, reconnect %.2fs, %d failed, server CPU %.2fs, fds %d", w.Wave, w.DisconnectSeconds, w.Reconnect.Seconds, w.Reconnect.Failed, w.ServerCPU, w.FDsAfter))
			open(fmt.Sprintf("wave %d", w.Wave), w.Reconnect)
		}
		phase("after-churn check", run.Churn.Check)
	case run.Slowloris != nil:
		s := run.Slowloris
		a := s.Attackers
		closed := "none"
		if len(a.CloseHow) > 0 {
			closed = fmt.Sprintf("%s, %.1fs to %.1fs after stalling", formatCounts(a.CloseHow), a.CloseAfter.Min, a.CloseAfter.Max)
		}
		out = append(out, fmt.Sprintf("attackers: %d mid-handshake + %d mid-frame asked, %d stalling, %d failed; open at honest start %d, at end %d; closed by the server: %s",
			a.Handshake, a.Frame, a.Established, a.Failed, a.OpenAtStart, a.OpenAtEnd, closed))
		if a.Failed > 0 {
			out = append(out, "attacker connect failures: "+formatCounts(a.Errors))
		}
		open("late join", s.LateJoin)
		phase("clean", s.Clean)
		phase("attacked", s.Attacked)
	case run.SlowConsumer != nil:
		s := run.SlowConsumer
		out = append(out, fmt.Sprintf("slow consumers: %d of %d connected; read afterwards, they showed: %s; %d stalled, %d of them still open with a backlog; %d KiB read from them in all (at most %d KiB of the %d KiB offered to each)",
			s.Established, s.Slow, formatCounts(s.Fates.Fates), s.Stalled, s.Fates.Backlogged, s.Fates.Bytes/kib, s.Fates.MaxBytes/kib, s.OfferedEach/kib))
		phase("clean", s.Clean)
		phase("with slow consumers", s.Loaded)
	case run.Recovery != nil:
		out = append(out, run.Recovery.details()...)
	case run.Soak != nil:
		out = append(out, run.Soak.details()...)
		phase("honest room", run.Soak.Honest)
		phase("busy room", run.Soak.Busy)
	}
	return out
}
