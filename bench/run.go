package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// Run carries out one chatbench invocation: for each repeat, the scenario
// against the server under test and then (with -compare) against the
// other server, each freshly started; then it prints the table and writes
// the JSON and plot files asked for. A soak that failed its checks makes
// it return ErrSoakFailed (wrapped) with the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	protoA, protoB := cfg.protocols()
	targets := []*target{{Label: "A", Name: cfg.ServerName, Command: cfg.Server, URL: cfg.URL, Protocol: protoA}}
	switch {
	case cfg.Compare != "":
		targets = append(targets, &target{Label: "B", Name: cfg.CompareName, Command: cfg.Compare, Protocol: protoB})
	case cfg.twoProtocols():
		// -protocol A,B without -compare: the same server, once per
		// protocol (started afresh for each run, as always).
		targets = append(targets, &target{Label: "B", Name: cfg.CompareName, Command: cfg.Server, URL: cfg.URL, Protocol: protoB})
	}
	for _, t := range targets {
		t.Instances = cfg.Instances
		if t.Command == "" {
			t.PIDs = cfg.PIDs
		}
		named := t.Name != ""
		if !named {
			if t.Command != "" {
				t.Name = nameOf(t.Command)
			} else if urls := splitList(t.URL); len(urls) > 1 {
				t.Name = fmt.Sprintf("%s +%d", urls[0], len(urls)-1)
			} else {
				t.Name = t.URL
			}
		}
		if !named && protoA != protoB {
			t.Name += " (" + t.Protocol + ")"
		}
	}
	fl, err := newFleet(cfg.Procs)
	if err != nil {
		return nil, err
	}
	defer fl.close()
	showProgress := isTerminal(cfg.Stderr)
	if cfg.Progress != nil {
		showProgress = *cfg.Progress
	}
	prog := newProgress(cfg.Stderr, showProgress)
	rep := newReport(cfg, targets)
	r := &runner{cfg: &cfg, fl: fl, prog: prog}
	for rep0 := 0; rep0 < cfg.Repeat; rep0++ {
		for _, t := range targets {
			run, err := r.runOnce(ctx, t, rep0+1)
			if run != nil {
				rep.Runs = append(rep.Runs, run)
			}
			if err != nil {
				prog.wait()
				return rep, err
			}
		}
	}
	prog.wait()
	rep.Finished = time.Now()
	rep.summarize()
	rep.WriteTable(cfg.Stdout)
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return rep, err
		}
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return rep, fmt.Errorf("chatbench: writing -json: %w", err)
		}
	}
	if cfg.Plot != "" {
		if err := writePlot(cfg.Plot, rep); err != nil {
			return rep, fmt.Errorf("chatbench: writing -plot: %w", err)
		}
	}
	return rep, rep.soakFailures()
}

// runner holds what one invocation's runs share.
type runner struct {
	cfg   *Config
	fl    *fleet
	prog  *progress
	t     *target
	phase uint16
	seq   int
	nonce uint32
}

// runOnce starts the target, runs the scenario once and stops the target.
func (r *runner) runOnce(ctx context.Context, t *target, repeat int) (*RunResult, error) {
	if err := t.start(ctx, r.cfg.ServerTimeout); err != nil {
		return nil, err
	}
	defer t.stop()
	run := &RunResult{Target: t.Label, Name: t.Name, Repeat: repeat, URL: t.URL, Instances: len(t.inst), Started: time.Now()}
	for _, in := range t.inst {
		run.PIDs = append(run.PIDs, in.pid)
	}
	if len(run.PIDs) == 1 {
		run.PID = run.PIDs[0]
	}
	if _, ok := t.sample(); ok {
		run.HaveServer = true
		// Round-robin: the first instances get the odd connections.
		need := (r.cfg.totalConns()+len(t.inst)-1)/len(t.inst) + fdMargin
		for _, in := range t.inst {
			limit, err := OpenFileLimit(in.pid)
			if err != nil {
				continue
			}
			if run.ServerOpenFileLimit == 0 || limit < run.ServerOpenFileLimit {
				run.ServerOpenFileLimit = limit
			}
			if need > limit {
				hint := "raise its limit, ulimit -n, before starting it"
				if per := limit - fdMargin; t.Command != "" && per > 0 {
					hint += fmt.Sprintf(", or spread the connections over -instances %d or more", (r.cfg.totalConns()+per-1)/per)
				}
				run.Notes = append(run.Notes, fmt.Sprintf("server pid %d may open only %d files, fewer than the %d this run needs: expect refused connections (%s)", in.pid, limit, need, hint))
			}
		}
	} else if t.pids() == nil {
		run.Notes = append(run.Notes, "server process unknown: no RSS/CPU figures (pass -pid, or use -server)")
	}
	r.t = t
	cpu0 := r.fl.clientCPU()
	var err error
	switch r.cfg.Scenario {
	case "density":
		run.Density, err = r.density(ctx)
	case "broadcast":
		run.Broadcast, err = r.broadcast(ctx)
	case "churn":
		run.Churn, err = r.churn(ctx)
	case "slowloris":
		run.Slowloris, err = r.slowloris(ctx)
	case "slowconsumer":
		run.SlowConsumer, err = r.slowconsumer(ctx)
	case "soak":
		run.Soak, err = r.soak(ctx)
	}
	run.ClientCPU = (r.fl.clientCPU() - cpu0).Seconds()
	run.Seconds = time.Since(run.Started).Seconds()
	run.ServerOutput = t.serverOutput()
	if err != nil {
		run.Error = err.Error()
		return run, fmt.Errorf("chatbench: %s against %s (%s): %w", r.cfg.Scenario, t.Name, t.URL, err)
	}
	run.Metrics = run.metrics()
	return run, nil
}

func splitPort(addr string) (string, int, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			var p int
			_, err := fmt.Sscanf(addr[i+1:], "%d", &p)
			return addr[:i], p, err
		}
	}
	return "", 0, errors.New("chatbench: no port")
}

// name returns a fresh group or room name.
func (r *runner) name(prefix string) string {
	r.seq++
	return fmt.Sprintf("%s-%d", prefix, r.seq)
}

// OpenSummary is the outcome of opening a batch of connections.
type OpenSummary struct {
	Requested  int            `json:"requested"`
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	Seconds    float64        `json:"seconds"`
	Rate       float64        `json:"per_second"`
	Latency    Latency        `json:"connect_latency"`
	Hist       HistogramData  `json:"connect_hist_ns"`
	// PerInstance counts the connections opened to each server instance
	// (with more than one).
	PerInstance []int `json:"opened_per_instance,omitempty"`
	perWorker   []int
}

// openGroup opens count connections of kind in group, spread over the
// workers; ids start at idBase.
func (r *runner) openGroup(ctx context.Context, group, kind string, count int, room string, rooms, rcvbuf, concurrency, idBase int) (*OpenSummary, error) {
	shares := split(count, len(r.fl.workers))
	addrs := r.t.addrs()
	var spread []string // connection id modulo len(spread) picks the instance
	if len(addrs) > 1 {
		spread = addrs
	}
	bases := make([]int, len(shares))
	b := idBase
	for i, s := range shares {
		bases[i] = b
		b += s
	}
	c0 := r.fl.counters()
	stop := r.prog.track("connect "+kind, int64(count), func() int64 {
		c := r.fl.counters()
		return c.Connected + c.Failed - c0.Connected - c0.Failed
	})
	resps, err := r.fl.all(ctx, func(i int) *Request {
		if shares[i] == 0 {
			return nil
		}
		return &Request{Op: "open", Open: &OpenSpec{
			Group: group, Kind: kind, Count: shares[i], IDBase: bases[i],
			Addr: addrs[0], Addrs: spread, Room: room, Rooms: rooms, SourceIPs: r.cfg.sourceIPs(),
			Concurrency: concurrency, ConnectTimeout: r.cfg.ConnectTimeout, RcvBuf: rcvbuf,
			MaxTime: r.cfg.Duration + r.cfg.ConnectTimeout, Pusher: r.pusherSpec(kind),
		}}
	})
	stop()
	if err != nil {
		return nil, err
	}
	sum := &OpenSummary{Requested: count, perWorker: make([]int, len(resps))}
	h := &Histogram{}
	var first, last time.Time
	for i, resp := range resps {
		o := resp.Open
		if o == nil {
			continue
		}
		sum.perWorker[i] = o.Opened
		sum.Opened += o.Opened
		if len(spread) > 0 {
			if sum.PerInstance == nil {
				sum.PerInstance = make([]int, len(spread))
			}
			for k, n := range o.OpenedPerAddr {
				if k < len(sum.PerInstance) {
					sum.PerInstance[k] += n
				}
			}
		}
		sum.Failed += o.Failed
		for k, v := range o.Errors {
			if sum.Errors == nil {
				sum.Errors = map[string]int{}
			}
			sum.Errors[k] += v
		}
		if sum.FirstError == "" {
			sum.FirstError = o.FirstError
		}
		h.Merge(o.Connect.Histogram())
		if first.IsZero() || o.Start.Before(first) {
			first = o.Start
		}
		if o.End.After(last) {
			last = o.End
		}
	}
	sum.Seconds = last.Sub(first).Seconds()
	sum.Rate = Rate(int64(sum.Opened), last.Sub(first))
	sum.Latency = Summarize(h)
	sum.Hist = h.Data()
	if sum.Opened == 0 && count > 0 {
		return sum, fmt.Errorf("no %s connection could be opened to %s (%d tried): %s", kind, r.t.URL, count, sum.FirstError)
	}
	return sum, nil
}

// pusherSpec is what members of kind need in Pusher mode, nil in raw mode.
func (r *runner) pusherSpec(kind string) *PusherSpec {
	if r.t.Protocol != ProtocolPusher || kind != KindMember {
		return nil
	}
	c := r.cfg
	return &PusherSpec{AppID: c.AppID, Key: c.AppKey, Secret: c.AppSecret, Channel: c.Channel}
}

// expected is how many deliveries sent messages make in a room of
// members: raw senders are members and skip themselves; Pusher
// publishers are not members, and every member gets every message.
func (r *runner) expected(sent int64, members int) int64 {
	if r.t.Protocol == ProtocolPusher {
		return sent * int64(max(members, 0))
	}
	return ExpectedDeliveries(sent, members)
}

// closeGroup closes a group on every worker.
func (r *runner) closeGroup(ctx context.Context, group, mode string) (time.Duration, error) {
	resps, err := r.fl.all(ctx, func(int) *Request {
		return &Request{Op: "close", Close: &CloseSpec{Group: group, Mode: mode}}
	})
	var d time.Duration
	for _, resp := range resps {
		if resp.Close != nil {
			d = max(d, resp.Close.Elapsed)
		}
	}
	return d, err
}

// inspectGroup sums the open/closed state of a group over the workers.
func (r *runner) inspectGroup(ctx context.Context, group string) (*InspectResult, []int, error) {
	resps, err := r.fl.all(ctx, func(int) *Request { return &Request{Op: "inspect", Group: group} })
	if err != nil {
		return nil, nil, err
	}
	out := &InspectResult{}
	open := make([]int, len(resps))
	for i, resp := range resps {
		in := resp.Inspect
		if in == nil {
			continue
		}
		open[i] = in.Open
		out.Total += in.Total
		out.Open += in.Open
		for k, n := range in.OpenPerAddr {
			for len(out.OpenPerAddr) <= k {
				out.OpenPerAddr = append(out.OpenPerAddr, 0)
			}
			out.OpenPerAddr[k] += n
		}
		for k, v := range in.CloseHow {
			if out.CloseHow == nil {
				out.CloseHow = map[string]int{}
			}
			out.CloseHow[k] += v
		}
		out.CloseAfter = append(out.CloseAfter, in.CloseAfter...)
	}
	sort.Float64s(out.CloseAfter)
	return out, open, nil
}

// joinBarrier waits until every live member of group has received a sync
// probe sent through the room (by a member; in Pusher mode published
// through the HTTP API, and then the sender's worker has no member that
// misses it), re-sending one every 250ms, for at most limit. It returns
// how many members never showed they were in the room.
func (r *runner) joinBarrier(ctx context.Context, group string, limit time.Duration) (int, error) {
	since := r.nonce + 1
	deadline := time.Now().Add(limit)
	var lastSend time.Time
	for {
		send := time.Since(lastSend) > 250*time.Millisecond
		if send {
			r.nonce++
			lastSend = time.Now()
		}
		sender := -1
		resps, err := r.fl.all(ctx, func(i int) *Request {
			return &Request{Op: "sync", Sync: &SyncSpec{Group: group, Nonce: r.nonce, Since: since}}
		})
		if err != nil {
			return 0, err
		}
		live, seen := 0, 0
		for i, resp := range resps {
			live += resp.Sync.Live
			seen += resp.Sync.Seen
			if sender < 0 && resp.Sync.Live > 0 {
				sender = i
			}
		}
		need := live - 1
		if r.t.Protocol == ProtocolPusher {
			need = live
		}
		if need <= 0 || seen >= need {
			return 0, nil
		}
		if time.Now().After(deadline) {
			return need - seen, nil
		}
		if send && sender >= 0 {
			resp, err := r.fl.workers[sender].call(ctx, Request{Op: "sync", Sync: &SyncSpec{Group: group, Nonce: r.nonce, Send: true, Since: since}})
			if err == nil && resp.Error != "" {
				err = errors.New(resp.Error)
			}
			if err != nil {
				return 0, err
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PhaseResult is one measured broadcast phase.
type PhaseResult struct {
	Members           int            `json:"members"`
	Senders           int            `json:"senders"`
	MessagesPerSender int            `json:"messages_per_sender"`
	Size              int            `json:"size"`
	Mode              string         `json:"mode"`
	Protocol          string         `json:"protocol"` // raw, or pusher (HTTP API publishers)
	Deliveries        Deliveries     `json:"deliveries"`
	LossPercent       float64        `json:"loss_percent"`
	Stray             int64          `json:"stray"`
	Latency           Latency        `json:"latency"`
	LatencyHist       HistogramData  `json:"latency_hist_ns"`
	SendSeconds       float64        `json:"send_seconds"`
	Seconds           float64        `json:"seconds"` // first send to last delivery
	DeliveriesPerSec  float64        `json:"deliveries_per_second"`
	ServerCPU         float64        `json:"server_cpu_seconds"`
	CPUPerDelivery    float64        `json:"server_cpu_us_per_delivery"`
	ClientCPU         float64        `json:"client_cpu_seconds"`
	RSSBefore         int64          `json:"server_rss_before"`
	RSSPeak           int64          `json:"server_rss_peak"`
	RSSAfter          int64          `json:"server_rss_after"`
	MembersClosed     int            `json:"members_closed"`
	CloseHow          map[string]int `json:"members_close_how,omitempty"`
	SendErrors        int64          `json:"send_errors"`
	FirstSendError    string         `json:"first_send_error,omitempty"`
	AckTimeouts       int64          `json:"ack_timeouts"`
	NotJoined         int            `json:"members_not_seen_in_room"`
}

// broadcastPhase runs one measured phase on an open group: senders
// messages each from the group's first members, then waits for every
// delivery.
func (r *runner) broadcastPhase(ctx context.Context, group string, senders, messages int) (*PhaseResult, error) {
	cfg := r.cfg
	pr, err := r.startPhase(ctx, group, phaseLoad{senders: senders, messages: messages, rate: cfg.Rate, duration: cfg.Duration})
	if err != nil {
		return nil, err
	}
	c0 := r.fl.counters()
	total := int64(senders * messages)
	stopSend := r.prog.track("send", total, func() int64 { return r.fl.counters().Sent - c0.Sent })
	stopRecv := r.prog.track("deliver", r.expected(total, pr.res.Members), func() int64 { return r.fl.counters().Received - c0.Received })
	defer stopRecv()
	resps, err := r.fl.all(ctx, func(i int) *Request { return &Request{Op: "send", Send: pr.sendSpec()} })
	stopSend()
	if err != nil {
		pr.samp.stop()
		return nil, err
	}
	sends := make([]*SendResult, len(resps))
	for i, resp := range resps {
		sends[i] = resp.Send
	}
	return r.finishPhase(ctx, pr, sends)
}

// phaseLoad is what the senders of one phase do.
type phaseLoad struct {
	senders, messages int
	rate              float64       // messages/s over all senders; 0: closed loop
	duration          time.Duration // stop sending after this
	size              int           // bytes per message; 0: -size
	burst             int           // open loop: messages due at once (SendSpec.Burst)
	offset            time.Duration // open loop: when the first ones are due
}

// phaseRun is a broadcast phase between startPhase and finishPhase: the
// members are in the room, the phase is prepared on every worker, and its
// senders run wherever a SendSpec from sendSpec reaches (a "send" request,
// or inside a soak).
type phaseRun struct {
	cfg     *Config
	group   string
	load    phaseLoad
	tag     uint16
	res     *PhaseResult
	live    []int // members alive per worker at prepare time
	samp    *sampler
	cpu0    time.Duration
	client0 time.Duration
}

// startPhase waits until every member of group is in the room, gives each
// worker senders in proportion to its live members and prepares the phase.
func (r *runner) startPhase(ctx context.Context, group string, load phaseLoad) (*phaseRun, error) {
	cfg := r.cfg
	if load.size == 0 {
		load.size = cfg.Size
	}
	notJoined, err := r.joinBarrier(ctx, group, cfg.DrainTimeout)
	if err != nil {
		return nil, err
	}
	_, open, err := r.inspectGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	perWorker := make([][]int, len(open))
	next := 0
	for next < load.senders {
		placed := false
		for w := range open {
			if next < load.senders && len(perWorker[w]) < open[w] {
				perWorker[w] = append(perWorker[w], next)
				next++
				placed = true
			}
		}
		if !placed {
			return nil, fmt.Errorf("only %d members alive for %d senders", next, load.senders)
		}
	}
	r.phase++
	closedLoop := load.rate == 0
	pr := &phaseRun{cfg: cfg, group: group, load: load, tag: r.phase}
	pr.res = &PhaseResult{Senders: load.senders, MessagesPerSender: load.messages, Size: load.size, NotJoined: notJoined, Protocol: r.t.Protocol}
	if closedLoop {
		pr.res.Mode = fmt.Sprintf("closed loop, window %d", cfg.Window)
	} else {
		pr.res.Mode = fmt.Sprintf("open loop, %.0f msg/s", load.rate)
	}
	pr.samp = startSampler(r.t.pids(), nil)
	pr.cpu0, _ = r.t.cpu()
	pr.client0 = r.fl.clientCPU()
	resps, err := r.fl.all(ctx, func(i int) *Request {
		return &Request{Op: "prepare", Prepare: &PrepareSpec{Group: group, Phase: pr.tag, TotalSenders: load.senders, SenderIDs: perWorker[i], Messages: load.messages, ClosedLoop: closedLoop}}
	})
	if err != nil {
		pr.samp.stop()
		return nil, err
	}
	pr.live = make([]int, len(resps))
	for i, resp := range resps {
		pr.live[i] = resp.Prepare.Live
		pr.res.Members += pr.live[i]
	}
	return pr, nil
}

// sendSpec is what every worker runs to send its share of the phase.
func (pr *phaseRun) sendSpec() *SendSpec {
	rate := 0.0
	if pr.load.rate > 0 {
		rate = pr.load.rate / float64(pr.load.senders)
	}
	cfg := pr.cfg
	return &SendSpec{Group: pr.group, Messages: pr.load.messages, Size: pr.load.size, Binary: cfg.Binary,
		RatePerSender: rate, Burst: pr.load.burst, Offset: pr.load.offset, Window: cfg.Window, Duration: pr.load.duration, AckTimeout: cfg.DrainTimeout}
}

// finishPhase takes the workers' send results (by worker; nil for none),
// waits for the deliveries and sums up the phase.
func (r *runner) finishPhase(ctx context.Context, pr *phaseRun, sends []*SendResult) (*PhaseResult, error) {
	cfg := r.cfg
	res := pr.res
	var firstSend, lastSend time.Time
	sentBy := make([]int64, len(r.fl.workers))
	for i, s := range sends {
		if s == nil {
			continue
		}
		sentBy[i] = s.Sent
		res.Deliveries.Sent += s.Sent
		res.SendErrors += s.SendErrors
		if res.FirstSendError == "" {
			res.FirstSendError = s.FirstError
		}
		res.AckTimeouts += s.AckTimeouts
		if s.Sent > 0 && (firstSend.IsZero() || s.First.Before(firstSend)) {
			firstSend = s.First
		}
		if s.Last.After(lastSend) {
			lastSend = s.Last
		}
	}
	if res.Deliveries.Sent == 0 && res.SendErrors > 0 {
		pr.samp.stop()
		return nil, fmt.Errorf("no message could be sent (%d senders failed): %s", res.SendErrors, res.FirstSendError)
	}
	res.SendSeconds = lastSend.Sub(firstSend).Seconds()
	resps, err := r.fl.all(ctx, func(i int) *Request {
		// Each worker's share: every message once per live member, but
		// a raw sender does not get its own.
		own := sentBy[i]
		if r.t.Protocol == ProtocolPusher {
			own = 0
		}
		return &Request{Op: "drain", Drain: &DrainSpec{Group: pr.group, Expected: res.Deliveries.Sent*int64(pr.live[i]) - own,
			Idle: cfg.DrainTimeout, Max: pr.load.duration + cfg.DrainTimeout}}
	})
	cpu1, _ := r.t.cpu()
	res.ClientCPU = (r.fl.clientCPU() - pr.client0).Seconds()
	peak, _ := pr.samp.stop()
	if err != nil {
		return nil, err
	}
	h := &Histogram{}
	var lastRecv time.Time
	d := Deliveries{Sent: res.Deliveries.Sent}
	for _, resp := range resps {
		dr := resp.Drain
		x := dr.Deliveries
		x.Sent = 0
		d.Add(x)
		res.Stray += dr.Stray
		h.Merge(dr.Latency.Histogram())
		if dr.LastReceive.After(lastRecv) {
			lastRecv = dr.LastReceive
		}
		res.MembersClosed += dr.Closed
		for k, v := range dr.CloseHow {
			if res.CloseHow == nil {
				res.CloseHow = map[string]int{}
			}
			res.CloseHow[k] += v
		}
	}
	res.Deliveries = d
	res.LossPercent = 100 * d.LossRatio()
	res.Latency = Summarize(h)
	res.LatencyHist = h.Data()
	if !lastRecv.IsZero() && !firstSend.IsZero() {
		res.Seconds = lastRecv.Sub(firstSend).Seconds()
		res.DeliveriesPerSec = Rate(d.Received, lastRecv.Sub(firstSend))
	}
	if r.t.pids() != nil {
		res.ServerCPU = (cpu1 - pr.cpu0).Seconds()
		res.CPUPerDelivery = CPUPerDelivery(cpu1-pr.cpu0, d.Received)
		res.RSSBefore = pr.samp.first
		res.RSSPeak = peak
		res.RSSAfter, _ = r.t.rss()
	}
	return res, nil
}

// sampler polls the RSS of a server's processes (summed over its
// instances) in the background: the peak, and (with a conns function) RSS
// against the number of client connections.
type sampler struct {
	pids    []int
	conns   func() int64
	first   int64
	peak    int64
	samples []RSSSample
	mu      sync.Mutex
	done    chan struct{}
	wg      sync.WaitGroup
}

// RSSSample is the server's RSS (summed over its instances) when the
// client held Conns connections.
type RSSSample struct {
	Seconds float64 `json:"t"`
	Conns   int64   `json:"conns"`
	RSS     int64   `json:"rss"`
}

func startSampler(pids []int, conns func() int64) *sampler {
	s := &sampler{pids: pids, conns: conns, done: make(chan struct{})}
	if len(pids) == 0 {
		return s
	}
	start := time.Now()
	take := func() {
		rss, err := sumRSS(pids)
		if err != nil {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.first == 0 {
			s.first = rss
		}
		s.peak = max(s.peak, rss)
		if s.conns != nil {
			s.samples = append(s.samples, RSSSample{Seconds: time.Since(start).Seconds(), Conns: s.conns(), RSS: rss})
		}
	}
	take()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak RSS and the samples.
func (s *sampler) stop() (int64, []RSSSample) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.samples
}

// sleepCtx sleeps d or until ctx ends, with a progress bar for long waits.
func (r *runner) sleepCtx(ctx context.Context, name string, d time.Duration) error {
	start := time.Now()
	stop := r.prog.track(name, d.Milliseconds(), func() int64 { return time.Since(start).Milliseconds() })
	defer stop()
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
