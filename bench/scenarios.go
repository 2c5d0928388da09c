package bench

import (
	"context"
	"fmt"
	"time"
)

// DensityResult: N idle connections, what they cost the server. With
// several server instances the server figures are sums over them (RSS
// per connection: the total growth over the total opened) and Instances
// has each one's.
type DensityResult struct {
	Connect        *OpenSummary      `json:"connect"`
	OpenAfterHold  int               `json:"open_after_hold"`
	HoldSeconds    float64           `json:"hold_seconds"`
	RSSBefore      int64             `json:"server_rss_before"`
	RSSConnected   int64             `json:"server_rss_connected"`
	RSSAfterHold   int64             `json:"server_rss_after_hold"`
	RSSPerConn     float64           `json:"server_rss_per_conn_bytes"`
	CPUConnect     float64           `json:"server_cpu_connect_seconds"`
	CPUPerConnect  float64           `json:"server_cpu_us_per_connect"`
	IdleCPUPercent float64           `json:"server_idle_cpu_percent"`
	FDsBefore      int               `json:"server_fds_before"`
	FDsAfter       int               `json:"server_fds_after"`
	ThreadsAfter   int               `json:"server_threads_after"`
	Samples        []RSSSample       `json:"rss_samples,omitempty"`
	Instances      []InstanceDensity `json:"instances,omitempty"`
	// The machine's side: the kernel before connecting and after the hold
	// (both ends of each loopback connection: two sockets), and
	// chatbench's own resident memory (this process and its workers).
	KernelBefore       KernelSample `json:"kernel_before"`
	KernelAfterHold    KernelSample `json:"kernel_after_hold"`
	KernelSlabPerConn  float64      `json:"kernel_slab_per_conn_bytes"`
	KernelTCPMemPerCon float64      `json:"kernel_tcp_mem_per_conn_bytes"`
	ClientRSSBefore    int64        `json:"client_rss_before"`
	ClientRSSAfterHold int64        `json:"client_rss_after_hold"`
	ClientRSSPerConn   float64      `json:"client_rss_per_conn_bytes"`
}

// InstanceDensity is one server instance's share of a density run.
type InstanceDensity struct {
	URL           string  `json:"url"`
	PID           int     `json:"pid,omitempty"`
	Opened        int     `json:"connections_opened"`
	OpenAfterHold int     `json:"open_after_hold"`
	RSSBefore     int64   `json:"server_rss_before"`
	RSSAfterHold  int64   `json:"server_rss_after_hold"`
	RSSPerConn    float64 `json:"server_rss_per_conn_bytes"`
	CPUConnect    float64 `json:"server_cpu_connect_seconds"`
	FDsAfter      int     `json:"server_fds_after"`
	ThreadsAfter  int     `json:"server_threads_after"`
}

func (r *runner) density(ctx context.Context) (*DensityResult, error) {
	cfg := r.cfg
	res := &DensityResult{}
	group, room := r.name("density"), r.name(cfg.Room)
	before, beforeEach, have := r.t.sampleEach()
	kBefore, kErr := ReadKernel()
	// With -repeat the client processes carry the heap of earlier runs:
	// return it first, or the growth per connection can come out negative.
	r.fl.releaseMemory(ctx)
	res.ClientRSSBefore = r.fl.clientRSS()
	c0 := r.fl.counters().Connected
	samp := startSampler(r.t.pids(), func() int64 { return r.fl.counters().Connected - c0 })
	defer func() { _, _ = r.closeGroup(context.Background(), group, CloseAbort) }()
	open, err := r.openGroup(ctx, group, KindMember, cfg.Conns, room, cfg.Rooms, 0, cfg.Concurrency, 0)
	if err != nil {
		samp.stop()
		return nil, err
	}
	res.Connect = open
	connected, connectedEach, okC := r.t.sampleEach()
	if err := r.sleepCtx(ctx, "hold idle", cfg.Hold); err != nil {
		samp.stop()
		return nil, err
	}
	res.HoldSeconds = cfg.Hold.Seconds()
	after, afterEach, okA := r.t.sampleEach()
	kAfter, kErr2 := ReadKernel()
	res.ClientRSSAfterHold = r.fl.clientRSS()
	if open.Opened > 0 {
		res.ClientRSSPerConn = float64(res.ClientRSSAfterHold-res.ClientRSSBefore) / float64(open.Opened)
		if kErr == nil && kErr2 == nil {
			res.KernelBefore, res.KernelAfterHold = kBefore, kAfter
			res.KernelSlabPerConn = float64(kAfter.Slab-kBefore.Slab) / float64(open.Opened)
			res.KernelTCPMemPerCon = float64(kAfter.TCPMem-kBefore.TCPMem) / float64(open.Opened)
		}
	}
	// An instance that died during the run leaves no sum to report.
	have = have && okC && okA
	_, res.Samples = samp.stop()
	in, _, err := r.inspectGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	res.OpenAfterHold = in.Open
	if n := len(r.t.inst); n > 1 {
		for k, inst := range r.t.inst {
			x := InstanceDensity{URL: inst.url, PID: inst.pid}
			if k < len(open.PerInstance) {
				x.Opened = open.PerInstance[k]
			}
			if k < len(in.OpenPerAddr) {
				x.OpenAfterHold = in.OpenPerAddr[k]
			}
			if have {
				b, c, a := beforeEach[k], connectedEach[k], afterEach[k]
				if r.t.SharedPort {
					// The kernel chose the instance: its share is what its
					// open fds grew by (one per connection).
					x.Opened, x.OpenAfterHold = c.FDs-b.FDs, a.FDs-b.FDs
				}
				x.RSSBefore, x.RSSAfterHold = b.RSS, a.RSS
				if x.Opened > 0 {
					x.RSSPerConn = float64(a.RSS-b.RSS) / float64(x.Opened)
				}
				x.CPUConnect = (c.CPU - b.CPU).Seconds()
				x.FDsAfter, x.ThreadsAfter = a.FDs, a.Threads
			}
			res.Instances = append(res.Instances, x)
		}
	}
	if have {
		res.RSSBefore, res.RSSConnected, res.RSSAfterHold = before.RSS, connected.RSS, after.RSS
		if open.Opened > 0 {
			res.RSSPerConn = float64(after.RSS-before.RSS) / float64(open.Opened)
			res.CPUPerConnect = CPUPerDelivery(connected.CPU-before.CPU, int64(open.Opened))
		}
		res.CPUConnect = (connected.CPU - before.CPU).Seconds()
		res.IdleCPUPercent = 100 * (after.CPU - connected.CPU).Seconds() / after.At.Sub(connected.At).Seconds()
		res.FDsBefore, res.FDsAfter, res.ThreadsAfter = before.FDs, after.FDs, after.Threads
	}
	return res, nil
}

func (r *runner) broadcast(ctx context.Context) (*PhaseResult, error) {
	cfg := r.cfg
	group, room := r.name("members"), r.name(cfg.Room)
	defer func() { _, _ = r.closeGroup(context.Background(), group, CloseAbort) }()
	open, err := r.openGroup(ctx, group, KindMember, cfg.Conns, room, 1, 0, cfg.Concurrency, 0)
	if err != nil {
		return nil, err
	}
	if open.Opened < cfg.Conns {
		return nil, fmt.Errorf("only %d of %d members connected: %v", open.Opened, cfg.Conns, open.Errors)
	}
	return r.broadcastPhase(ctx, group, cfg.Senders, cfg.Messages)
}

// ChurnResult: the whole population drops and reconnects at once, Waves
// times.
type ChurnResult struct {
	Initial       *OpenSummary `json:"initial"`
	Waves         []WaveResult `json:"waves"`
	Failures      int          `json:"failures"`
	Check         *PhaseResult `json:"check"` // a broadcast after the last wave
	FDsBefore     int          `json:"server_fds_before"`
	FDsAfterClose int          `json:"server_fds_after_close"`
	RSSBefore     int64        `json:"server_rss_before"`
	RSSAfter      int64        `json:"server_rss_after"`
}

// WaveResult is one disconnect/reconnect wave.
type WaveResult struct {
	Wave              int          `json:"wave"`
	Close             string       `json:"close"`
	DisconnectSeconds float64      `json:"disconnect_seconds"`
	Reconnect         *OpenSummary `json:"reconnect"`
	ServerCPU         float64      `json:"server_cpu_seconds"`
	RSSAfter          int64        `json:"server_rss_after"`
	FDsAfter          int          `json:"server_fds_after"`
}

func (r *runner) churn(ctx context.Context) (*ChurnResult, error) {
	cfg := r.cfg
	res := &ChurnResult{}
	room := r.name(cfg.Room)
	group := r.name("churn")
	before, have := r.t.sample()
	res.FDsBefore, res.RSSBefore = before.FDs, before.RSS
	closed := false
	defer func() {
		if !closed {
			_, _ = r.closeGroup(context.Background(), group, CloseAbort)
		}
	}()
	open, err := r.openGroup(ctx, group, KindMember, cfg.Conns, room, 1, 0, cfg.Concurrency, 0)
	if err != nil {
		return nil, err
	}
	res.Initial = open
	for w := 1; w <= cfg.Waves; w++ {
		wave := WaveResult{Wave: w, Close: cfg.ChurnClose}
		cpu0, _ := r.t.cpu()
		d, err := r.closeGroup(ctx, group, cfg.ChurnClose)
		if err != nil {
			return nil, err
		}
		wave.DisconnectSeconds = d.Seconds()
		// All at once: every connection of the wave dials concurrently.
		group = r.name("churn")
		re, err := r.openGroup(ctx, group, KindMember, cfg.Conns, room, 1, 0, cfg.Conns, 0)
		if re == nil {
			return nil, err
		}
		wave.Reconnect = re
		res.Failures += re.Failed
		if have {
			cpu1, _ := r.t.cpu()
			wave.ServerCPU = (cpu1 - cpu0).Seconds()
			s, _ := r.t.sample()
			wave.RSSAfter, wave.FDsAfter = s.RSS, s.FDs
		}
		res.Waves = append(res.Waves, wave)
		if err != nil {
			return res, err
		}
	}
	// The room must still work after the storms.
	check, err := r.broadcastPhase(ctx, group, min(cfg.Senders, cfg.Conns), cfg.Messages)
	if err != nil {
		return nil, err
	}
	res.Check = check
	if _, err := r.closeGroup(ctx, group, cfg.ChurnClose); err != nil {
		return nil, err
	}
	closed = true
	if have {
		// The server should give every descriptor back; allow it a moment.
		deadline := time.Now().Add(3 * time.Second)
		for {
			s, _ := r.t.sample()
			res.FDsAfterClose, res.RSSAfter = s.FDs, s.RSS
			if s.FDs <= before.FDs+2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return res, nil
}

// AttackersResult says whether the slowloris attackers really stalled.
type AttackersResult struct {
	Handshake   int            `json:"handshake"` // asked for
	Frame       int            `json:"frame"`
	Established int            `json:"established"` // connected and stalling
	Failed      int            `json:"failed"`
	Errors      map[string]int `json:"errors,omitempty"`
	OpenAtStart int            `json:"open_at_honest_start"`
	OpenAtEnd   int            `json:"open_at_honest_end"`
	CloseHow    map[string]int `json:"close_how,omitempty"`
	CloseAfter  Seconds3       `json:"close_after_stall"`
}

// Seconds3 is min/median/max of a set of durations, in seconds.
type Seconds3 struct {
	Min    float64 `json:"min_s"`
	Median float64 `json:"median_s"`
	Max    float64 `json:"max_s"`
}

func seconds3(xs []float64) Seconds3 {
	if len(xs) == 0 {
		return Seconds3{}
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return Seconds3{Min: lo, Median: median(xs), Max: hi}
}

// SlowlorisResult: honest broadcast without, then with, stalled attackers.
type SlowlorisResult struct {
	Clean     *PhaseResult    `json:"clean"`
	Attacked  *PhaseResult    `json:"attacked"`
	LateJoin  *OpenSummary    `json:"late_join"` // honest connects while attacked
	Attackers AttackersResult `json:"attackers"`
	P99Ratio  float64         `json:"p99_attacked_over_clean"`
}

func (r *runner) slowloris(ctx context.Context) (*SlowlorisResult, error) {
	cfg := r.cfg
	res := &SlowlorisResult{}
	room, honest := r.name(cfg.Room), r.name("honest")
	hsGroup, frGroup := r.name("stall-handshake"), r.name("stall-frame")
	defer func() {
		for _, g := range []string{hsGroup, frGroup, honest, r.name("late")} {
			_, _ = r.closeGroup(context.Background(), g, CloseAbort)
		}
	}()
	err := r.openHonest(ctx, honest, room)
	if err != nil {
		return nil, err
	}
	if res.Clean, err = r.broadcastPhase(ctx, honest, cfg.Senders, cfg.Messages); err != nil {
		return nil, err
	}
	a := &res.Attackers
	switch cfg.Attack {
	case "handshake":
		a.Handshake = cfg.Attackers
	case "frame":
		a.Frame = cfg.Attackers
	default:
		a.Handshake = cfg.Attackers / 2
		a.Frame = cfg.Attackers - a.Handshake
	}
	idBase := cfg.Conns + lateJoiners(cfg.Conns)
	for _, x := range []struct {
		group, kind string
		n           int
	}{{hsGroup, KindStallHandshake, a.Handshake}, {frGroup, KindStallFrame, a.Frame}} {
		if x.n == 0 {
			continue
		}
		// The attackers stall in a room of their own: the attack is on the
		// server's workers and memory, and the honest phases must fan out to
		// the same members to be comparable.
		o, err := r.openGroup(ctx, x.group, x.kind, x.n, room+"-attackers", 1, 0, cfg.Concurrency, idBase)
		if o == nil {
			return nil, err
		}
		idBase += x.n
		a.Established += o.Opened
		a.Failed += o.Failed
		a.Errors = addCounts(a.Errors, o.Errors)
	}
	inspect := func() (open int, how map[string]int, after []float64, err error) {
		for _, g := range []string{hsGroup, frGroup} {
			in, _, err := r.inspectGroup(ctx, g)
			if err != nil {
				continue // a group with no connections is on no worker
			}
			open += in.Open
			how = addCounts(how, in.CloseHow)
			after = append(after, in.CloseAfter...)
		}
		return open, how, after, nil
	}
	a.OpenAtStart, _, _, _ = inspect()
	if res.Attacked, err = r.broadcastPhase(ctx, honest, cfg.Senders, cfg.Messages); err != nil {
		return nil, err
	}
	// Honest clients still get in while the attackers stall (after the
	// attacked phase, so both phases fan out to the same members).
	late, err := r.openGroup(ctx, r.name("late"), KindMember, lateJoiners(cfg.Conns), room, 1, 0, cfg.Concurrency, cfg.Conns)
	res.LateJoin = late
	if late == nil {
		return nil, err
	}
	var after []float64
	a.OpenAtEnd, a.CloseHow, after, _ = inspect()
	a.CloseAfter = seconds3(after)
	if res.Clean.Latency.P99 > 0 {
		res.P99Ratio = res.Attacked.Latency.P99 / res.Clean.Latency.P99
	}
	return res, nil
}

// SlowConsumerResult: honest broadcast without, then with, members that
// never read.
type SlowConsumerResult struct {
	Clean       *PhaseResult `json:"clean"`
	Loaded      *PhaseResult `json:"with_slow"`
	Slow        int          `json:"slow"`
	Established int          `json:"slow_established"`
	Fates       ProbeResult  `json:"slow_fates"`
	OfferedEach int64        `json:"bytes_offered_each"` // payload bytes broadcast to each slow member
	Stalled     int          `json:"stalled"`            // closed by the server, or left with a backlog
	RSSBefore   int64        `json:"server_rss_before"`
	RSSPeak     int64        `json:"server_rss_peak"`
	RSSAfter    int64        `json:"server_rss_after"`
	RSSGrowth   int64        `json:"server_rss_growth"`
	P99Ratio    float64      `json:"p99_with_slow_over_clean"`
}

func (r *runner) slowconsumer(ctx context.Context) (*SlowConsumerResult, error) {
	cfg := r.cfg
	res := &SlowConsumerResult{Slow: cfg.Slow}
	room, honest, slow := r.name(cfg.Room), r.name("honest"), r.name("slow")
	defer func() {
		for _, g := range []string{slow, honest} {
			_, _ = r.closeGroup(context.Background(), g, CloseAbort)
		}
	}()
	err := r.openHonest(ctx, honest, room)
	if err != nil {
		return nil, err
	}
	// The clean phase fans out to as many members as the loaded one: the
	// slow members' places are taken by members that read, so the ratio
	// shows what stalling costs, not what a bigger room costs.
	filler := r.name("filler")
	if _, err := r.openGroup(ctx, filler, KindMember, cfg.Slow, room, 1, 0, cfg.Concurrency, cfg.Conns+cfg.Slow); err != nil {
		return nil, err
	}
	if res.Clean, err = r.broadcastPhase(ctx, honest, cfg.Senders, cfg.Messages); err != nil {
		return nil, err
	}
	if _, err := r.closeGroup(ctx, filler, CloseWS); err != nil {
		return nil, err
	}
	so, err := r.openGroup(ctx, slow, KindSlow, cfg.Slow, room, 1, cfg.SlowRcvBuf, cfg.Concurrency, cfg.Conns)
	if so == nil {
		return nil, err
	}
	res.Established = so.Opened
	if res.Loaded, err = r.broadcastPhase(ctx, honest, cfg.Senders, cfg.Messages); err != nil {
		return nil, err
	}
	res.RSSBefore, res.RSSPeak, res.RSSAfter = res.Loaded.RSSBefore, res.Loaded.RSSPeak, res.Loaded.RSSAfter
	res.RSSGrowth = res.RSSPeak - res.RSSBefore
	res.OfferedEach = res.Loaded.Deliveries.Sent * int64(cfg.Size)
	resps, err := r.fl.all(ctx, func(i int) *Request {
		if so.perWorker[i] == 0 {
			return nil
		}
		return &Request{Op: "probe", Probe: &ProbeSpec{Group: slow, Wait: cfg.ProbeWait}}
	})
	if err != nil {
		return nil, err
	}
	res.Fates.Fates = map[string]int{}
	for _, resp := range resps {
		p := resp.Probe
		if p == nil {
			continue
		}
		res.Fates.Total += p.Total
		res.Fates.Messages += p.Messages
		res.Fates.Bytes += p.Bytes
		res.Fates.MaxBytes = max(res.Fates.MaxBytes, p.MaxBytes)
		res.Fates.Backlogged += p.Backlogged
		res.Fates.Fates = addCounts(res.Fates.Fates, p.Fates)
	}
	// A slow member stalled if the server gave up on it or still had
	// data for it once the phase was over: it never read, so anything
	// it could read now was held back by the server or the kernel.
	res.Stalled = res.Fates.Total - res.Fates.Fates["open"] + res.Fates.Backlogged
	if res.Clean.Latency.P99 > 0 {
		res.P99Ratio = res.Loaded.Latency.P99 / res.Clean.Latency.P99
	}
	return res, nil
}
