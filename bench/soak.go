package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The soak scenario: everything at once, for a long time, against one
// server, and whether the server ends up where it started.
//
//   - Long-lived clients: -conns honest members in one room, -senders of
//     them sending -rate messages/s in all, every message checked
//     (broadcastPhase's accounting); and a busy room of one flooder and
//     busyReaders readers, checked the same way.
//   - Every -round, -slow slow consumers join the busy room, half never
//     reading, half reading slowReadRate bytes/s; at the round's end a
//     probe reads them to see whether the server closed them (and with
//     which code), and they are dropped. Half a round in, the flooder
//     sends floodBurst messages back to back: more than the kernel's
//     buffers hold for the slow ones, and, unless the server stops
//     reading a sender its room cannot keep up with, more than its queue
//     holds for the readers.
//   - Every -round, -attackers hostile clients (soakHostile) stall, trickle,
//     half-close or break the protocol; at the round's end chatbench notes
//     which ones the server closed, and drops the rest.
//   - All the time, -churn-rate churn cycles per second: two clients join a
//     fresh room, exchange a message, leave.
//
// A warm-up round runs all of it but the honest senders first, so the
// server has seen every kind of load once. The start sample is taken
// after it, once the server is back to the descriptors it had with only
// the long-lived clients; the end sample the same way after the last
// round. soakChecks compares them.

// Soak constants; the tolerances are documented in bench/README.md.
const (
	busyReaders = 2
	floodSize   = 16 << 10
	floodBurst  = 1024 // messages per round: 16 MiB

	soakFDSlack        = 16
	soakGaugeSlack     = 2 // chatd_sockets, chatd_connections
	soakGoroutineSlack = 16
	soakRSSSlack       = 8 << 20
	soakRSSFraction    = 0.10
	soakThreadSlack    = 4
	soakSettleMax      = 10 * time.Second
)

// soakGauges are the /metrics gauges a soak compares, where the server
// exposes them.
var soakGauges = []string{"chatd_sockets", "chatd_connections", "go_goroutines"}

// ErrSoakFailed is returned by Run, after the report is written, when a
// soak run failed one of its required checks.
var ErrSoakFailed = errors.New("chatbench: soak failed")

// SoakResult is one soak run.
type SoakResult struct {
	Seconds      float64        `json:"seconds"` // the measured part, after the warm-up
	RoundSeconds float64        `json:"round_seconds"`
	FloodBurst   int            `json:"flood_burst"` // messages per round, back to back
	FloodSize    int            `json:"flood_size"`
	Hostile      map[string]int `json:"hostile_per_round"`
	// ChurnInFlight is how many churn cycles may run at once.
	ChurnInFlight int `json:"churn_in_flight"`

	Warmup       *SoakLoops   `json:"warmup"`
	WarmupBusy   *PhaseResult `json:"warmup_busy"`
	WarmupSettle SettleResult `json:"warmup_settle"`

	Loops  *SoakLoops   `json:"loops"`
	Honest *PhaseResult `json:"honest"`
	Busy   *PhaseResult `json:"busy"`

	Start   *SoakSample  `json:"start,omitempty"`
	End     *SoakSample  `json:"end,omitempty"`
	Samples []SoakSample `json:"samples,omitempty"` // during the measured part
	PeakRSS int64        `json:"server_rss_peak"`
	PeakFDs int          `json:"server_fds_peak"`
	Settle  SettleResult `json:"settle"`
	// CounterDeltas are the server's /metrics counters (*_total), end
	// less start: what happened meanwhile, as the server counts it
	// (chatbench's own scrapes included).
	CounterDeltas map[string]float64 `json:"server_counter_deltas,omitempty"`

	Checks []SoakCheck `json:"checks"`
	Pass   bool        `json:"pass"`
}

// SoakLoops sums the workers' loops of one soak command.
type SoakLoops struct {
	Seconds      float64         `json:"seconds"`
	Rounds       int             `json:"rounds"`
	Churn        ChurnTally      `json:"churn"`
	ChurnLatency Latency         `json:"churn_cycle_latency"`
	Slow         SlowTally       `json:"slow"`         // never read
	SlowReaders  SlowTally       `json:"slow_readers"` // read slowReadRate bytes/s
	Hostile      []HostileResult `json:"hostile"`
}

// HostileResult is one hostile kind over every round.
type HostileResult struct {
	Kind string `json:"kind"`
	HostileTally
	ClosedByServer int      `json:"closed_by_server"`
	CloseAfterS    Seconds3 `json:"close_after_stall"`
}

// SoakSample is the server at one moment: /proc, and the /metrics
// gauges it exposes.
type SoakSample struct {
	Seconds  float64            `json:"t"` // since the measured part began
	RSS      int64              `json:"rss_bytes"`
	FDs      int                `json:"fds"`
	Threads  int                `json:"threads"`
	Gauges   map[string]float64 `json:"gauges,omitempty"`
	counters map[string]float64
}

// SettleResult says how long the server took to give back what a round
// of short-lived clients held.
type SettleResult struct {
	Seconds float64 `json:"seconds"`
	Reached bool    `json:"reached"` // fds within soakFDSlack of the reference, and steady
	FDs     int     `json:"fds"`
	RefFDs  int     `json:"reference_fds"`
}

// SoakCheck is one line of the verdict.
type SoakCheck struct {
	Name     string `json:"name"`
	Required bool   `json:"required"` // failing it fails the soak; the others warn
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`
}

func (c SoakCheck) status() string {
	switch {
	case c.OK:
		return "PASS"
	case c.Required:
		return "FAIL"
	}
	return "WARN"
}

// soakRooms are the rooms of one soak run.
type soakRooms struct{ honest, busy, hostile string }

func (r *runner) soak(ctx context.Context) (*SoakResult, error) {
	cfg := r.cfg
	res := &SoakResult{RoundSeconds: cfg.Round.Seconds(), FloodBurst: floodBurst, FloodSize: floodSize, Hostile: cfg.soakHostile(), ChurnInFlight: cfg.churnInFlight()}
	rooms := soakRooms{honest: r.name(cfg.Room), busy: r.name(cfg.Room + "-busy"), hostile: r.name(cfg.Room + "-hostile")}
	honest, busy := r.name("honest"), r.name("busy")
	defer func() {
		for _, g := range []string{honest, busy} {
			_, _ = r.closeGroup(context.Background(), g, CloseAbort)
		}
	}()
	if err := r.openHonest(ctx, honest, rooms.honest); err != nil {
		return nil, err
	}
	o, err := r.openGroup(ctx, busy, KindMember, 1+busyReaders, rooms.busy, 1, 0, cfg.Concurrency, cfg.Conns)
	if err != nil {
		return nil, err
	}
	if o.Opened < 1+busyReaders {
		return nil, fmt.Errorf("only %d of the busy room's %d members connected: %v", o.Opened, 1+busyReaders, o.Errors)
	}
	metrics := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// One burst per round, half a round in: the round's slow consumers
	// are in the room by then.
	flood := func(d time.Duration) phaseLoad {
		bursts := int(math.Ceil(d.Seconds() / cfg.Round.Seconds()))
		return phaseLoad{senders: 1, messages: bursts * floodBurst, rate: floodBurst / cfg.Round.Seconds(), burst: floodBurst,
			offset: cfg.Round / 2, duration: d, size: floodSize}
	}

	// Warm-up: one round of everything but the honest senders.
	before, _ := r.soakSample(metrics, time.Time{})
	wb, err := r.startPhase(ctx, busy, flood(cfg.Round))
	if err != nil {
		return nil, err
	}
	warm, sends, err := r.soakLoops(ctx, "warm-up", cfg.Round, rooms, []*phaseRun{wb})
	if err != nil {
		wb.samp.stop()
		return nil, err
	}
	res.Warmup = warm
	if res.WarmupBusy, err = r.finishPhase(ctx, wb, sends[0]); err != nil {
		return nil, err
	}
	res.WarmupSettle = r.settle(ctx, before)
	res.Start, _ = r.soakSample(metrics, time.Time{})

	// The measured part.
	perSender := cfg.Rate / float64(cfg.Senders)
	hp, err := r.startPhase(ctx, honest, phaseLoad{senders: cfg.Senders, messages: int(math.Ceil(perSender * cfg.Duration.Seconds())), rate: cfg.Rate, duration: cfg.Duration})
	if err != nil {
		return nil, err
	}
	bp, err := r.startPhase(ctx, busy, flood(cfg.Duration))
	if err != nil {
		hp.samp.stop()
		return nil, err
	}
	t0 := time.Now()
	stopSampling := r.sampleSoak(metrics, t0, res)
	loops, sends, err := r.soakLoops(ctx, "soak", cfg.Duration, rooms, []*phaseRun{hp, bp})
	stopSampling()
	if err != nil {
		hp.samp.stop()
		bp.samp.stop()
		return nil, err
	}
	res.Loops = loops
	res.Seconds = time.Since(t0).Seconds()
	if res.Honest, err = r.finishPhase(ctx, hp, sends[0]); err != nil {
		bp.samp.stop()
		return nil, err
	}
	if res.Busy, err = r.finishPhase(ctx, bp, sends[1]); err != nil {
		return nil, err
	}
	res.Settle = r.settle(ctx, res.Start)
	res.End, _ = r.soakSample(metrics, t0)

	res.PeakRSS = max(res.Honest.RSSPeak, res.Busy.RSSPeak)
	for _, s := range append(res.Samples, derefSamples(res.Start, res.End)...) {
		res.PeakRSS = max(res.PeakRSS, s.RSS)
		res.PeakFDs = max(res.PeakFDs, s.FDs)
	}
	if res.Start != nil && res.End != nil {
		for k, v := range res.End.counters {
			if d := v - res.Start.counters[k]; d != 0 {
				if res.CounterDeltas == nil {
					res.CounterDeltas = map[string]float64{}
				}
				res.CounterDeltas[k] = d
			}
		}
	}
	res.Checks = soakChecks(res)
	res.Pass = true
	for _, c := range res.Checks {
		res.Pass = res.Pass && (c.OK || !c.Required)
	}
	return res, nil
}

func derefSamples(ss ...*SoakSample) []SoakSample {
	var out []SoakSample
	for _, s := range ss {
		if s != nil {
			out = append(out, *s)
		}
	}
	return out
}

// soakLoops runs the soak command for d on every worker, each with its
// share of the loops and the senders of phases, and sums the results; it
// also returns each phase's send results by worker, for finishPhase.
func (r *runner) soakLoops(ctx context.Context, name string, d time.Duration, rooms soakRooms, phases []*phaseRun) (*SoakLoops, [][]*SendResult, error) {
	cfg := r.cfg
	n := len(r.fl.workers)
	hostile := map[string][]int{}
	for kind, count := range cfg.soakHostile() {
		hostile[kind] = split(count, n)
	}
	never, slowReaders := cfg.soakSlow()
	slow, readers, inFlight := split(never, n), split(slowReaders, n), split(cfg.churnInFlight(), n)
	prefix := r.name(name)
	start := time.Now()
	stop := r.prog.track(name, d.Milliseconds(), func() int64 { return time.Since(start).Milliseconds() })
	resps, err := r.fl.all(ctx, func(i int) *Request {
		s := &SoakSpec{Duration: d, Round: cfg.Round, Addr: r.t.addrs()[0], SourceIPs: cfg.sourceIPs(),
			ConnectTimeout: cfg.ConnectTimeout, Concurrency: cfg.Concurrency, Prefix: fmt.Sprintf("%s-w%d", prefix, i),
			// Ids only pick source addresses; keep them clear of the
			// long-lived members' and of the other workers'.
			IDBase:    cfg.Conns + 1 + busyReaders + i<<24,
			ChurnRate: cfg.ChurnRate / float64(n), ChurnInFlight: max(1, inFlight[i]), ChurnClose: cfg.ChurnClose,
			Slow: slow[i], SlowReaders: readers[i], SlowReadRate: slowReadRate, SlowRoom: rooms.busy, SlowRcvBuf: cfg.SlowRcvBuf, ProbeWait: cfg.ProbeWait,
			Hostile: map[string]int{}, HostileRoom: rooms.hostile, HTTPPath: "/apps/" + cfg.AppID + "/events"}
		for kind, shares := range hostile {
			if shares[i] > 0 {
				s.Hostile[kind] = shares[i]
			}
		}
		for _, pr := range phases {
			s.Sends = append(s.Sends, pr.sendSpec())
		}
		return &Request{Op: "soak", Soak: s}
	})
	stop()
	if err != nil {
		return nil, nil, err
	}
	out := &SoakLoops{Seconds: time.Since(start).Seconds()}
	sends := make([][]*SendResult, len(phases))
	for p := range sends {
		sends[p] = make([]*SendResult, n)
	}
	totals := map[string]*HostileTally{}
	for i, resp := range resps {
		s := resp.Soak
		if s == nil {
			continue
		}
		for p := range phases {
			if p < len(s.Sends) {
				sends[p][i] = s.Sends[p]
			}
		}
		out.Rounds = max(out.Rounds, s.Rounds)
		out.Churn.add(s.Churn)
		out.Slow.add(s.Slow)
		out.SlowReaders.add(s.SlowReaders)
		for kind, t := range s.Hostile {
			if totals[kind] == nil {
				totals[kind] = &HostileTally{}
			}
			totals[kind].add(t)
		}
	}
	out.ChurnLatency = Summarize(out.Churn.Cycle.Histogram())
	for _, kind := range HostileKinds {
		t := totals[kind]
		if t == nil {
			continue
		}
		h := HostileResult{Kind: kind, HostileTally: *t, ClosedByServer: sumCounts(t.CloseHow), CloseAfterS: seconds3(t.CloseAfter)}
		h.CloseAfter = nil // summed up in CloseAfterS
		out.Hostile = append(out.Hostile, h)
	}
	return out, sends, nil
}

// soakSample reads the server's /proc figures and /metrics gauges (in
// that order, so the scrape's own connection is not among the fds); nil
// without /proc figures.
func (r *runner) soakSample(client *http.Client, t0 time.Time) (*SoakSample, bool) {
	p, ok := r.t.sample()
	if !ok {
		return nil, false
	}
	s := &SoakSample{RSS: p.RSS, FDs: p.FDs, Threads: p.Threads}
	if !t0.IsZero() {
		s.Seconds = time.Since(t0).Seconds()
	}
	all := scrapeMetrics(client, r.t.metricsAddr())
	for k, v := range all {
		name, _, _ := strings.Cut(k, "{")
		switch {
		case strings.HasSuffix(name, "_total"):
			if s.counters == nil {
				s.counters = map[string]float64{}
			}
			s.counters[k] = v
		case slices.Contains(soakGauges, k):
			if s.Gauges == nil {
				s.Gauges = map[string]float64{}
			}
			s.Gauges[k] = v
		}
	}
	return s, true
}

// sampleSoak samples the server every so often (a sixtieth of the soak,
// between 1s and 10s) into res.Samples until the returned stop is called.
func (r *runner) sampleSoak(client *http.Client, t0 time.Time, res *SoakResult) (stop func()) {
	every := min(max(r.cfg.Duration/60, time.Second), 10*time.Second)
	done := make(chan struct{})
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if s, ok := r.soakSample(client, t0); ok {
					mu.Lock()
					res.Samples = append(res.Samples, *s)
					mu.Unlock()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// settle waits until the server is back within soakFDSlack of ref's
// descriptors and steady for half a second, for at most soakSettleMax.
func (r *runner) settle(ctx context.Context, ref *SoakSample) SettleResult {
	start := time.Now()
	if ref == nil {
		return SettleResult{}
	}
	out := SettleResult{RefFDs: ref.FDs}
	last, steady := -1, 0
	for {
		p, ok := r.t.sample()
		if !ok {
			return out
		}
		out.FDs = p.FDs
		out.Seconds = time.Since(start).Seconds()
		if p.FDs == last {
			steady++
		} else {
			last, steady = p.FDs, 0
		}
		if p.FDs <= ref.FDs+soakFDSlack && steady >= 5 {
			out.Reached = true
			return out
		}
		if time.Since(start) > soakSettleMax || ctx.Err() != nil {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrapeMetrics fetches http://addr/metrics and parses it; nil if the
// server has none.
func scrapeMetrics(client *http.Client, addr string) map[string]float64 {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil
	}
	return parseMetrics(io.LimitReader(resp.Body, 1<<20))
}

// parseMetrics reads the Prometheus text format: "name{labels} value
// [timestamp]" per sample, # lines are comments. Keys are the name with
// its labels as written.
func parseMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			key, rest = line[:j+1], line[j+1:]
		} else if k, v, ok := strings.Cut(line, " "); ok {
			key, rest = k, v
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[key] = v
	}
	return out
}

// closed is how many slow consumers the server had closed by their probe.
func (s SlowTally) closed() int { return sumCounts(s.Fates) - s.Fates["open"] }

// soakChecks is the verdict: loss, the long-lived members, slow
// consumers and churn as they should be, and the server's resources back
// where they started within the documented slack. Hostile clients the
// server did not close within their round only warn: whether it should
// have depends on its timeouts; a socket it keeps after that shows in
// the fds.
func soakChecks(res *SoakResult) []SoakCheck {
	var cs []SoakCheck
	check := func(required bool, name string, ok bool, format string, args ...any) {
		cs = append(cs, SoakCheck{Name: name, Required: required, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if h := res.Honest; h != nil {
		d := h.Deliveries
		check(true, "honest room: every message delivered", d.Sent > 0 && d.Lost == 0 && d.Duplicates == 0 && d.Corrupt == 0,
			"%d members, %d messages sent, %d of %d deliveries received, %d lost, %d duplicates, %d corrupt",
			h.Members, d.Sent, d.Received, d.Expected, d.Lost, d.Duplicates, d.Corrupt)
	}
	// The two busy phases share their members: the later one's closed
	// members include the earlier one's.
	var busy Deliveries
	closedBusy, busyHow := 0, map[string]int(nil)
	for _, p := range []*PhaseResult{res.WarmupBusy, res.Busy} {
		if p != nil {
			busy.Add(p.Deliveries)
			if p.MembersClosed >= closedBusy {
				closedBusy, busyHow = p.MembersClosed, p.CloseHow
			}
		}
	}
	check(true, "busy room readers: every message delivered", busy.Sent > 0 && busy.Lost == 0 && busy.Duplicates == 0 && busy.Corrupt == 0,
		"%d readers, %d messages of %d KiB sent (warm-up included), %d of %d deliveries received, %d lost, %d duplicates, %d corrupt",
		busyReaders, busy.Sent, floodSize/kib, busy.Received, busy.Expected, busy.Lost, busy.Duplicates, busy.Corrupt)
	if res.Honest != nil {
		how := addCounts(addCounts(nil, res.Honest.CloseHow), busyHow)
		check(true, "long-lived members kept", res.Honest.MembersClosed == 0 && closedBusy == 0,
			"the server closed %d honest members and %d busy room members (%s)", res.Honest.MembersClosed, closedBusy, formatCounts(how))
	}
	if l := res.Loops; l != nil {
		for _, x := range []struct {
			name string
			t    SlowTally
		}{{"slow consumers", l.Slow}, {"slow readers", l.SlowReaders}} {
			probed := sumCounts(x.t.Fates)
			check(true, x.name+" closed by the server", x.t.Opened > 0 && x.t.closed() == probed,
				"%d of %d closed within their round (%s)", x.t.closed(), probed, formatCounts(x.t.Fates))
			check(false, x.name+" closed with 1008", probed > 0 && x.t.Fates["close 1008"] == probed,
				"%d of %d got a close frame with 1008 (policy violation) after what the server had kept for them", x.t.Fates["close 1008"], probed)
		}
		c := l.Churn
		check(true, "churn cycles", c.Cycles > 0 && c.Failed == 0,
			"%d completed, %d failed (%s), %d not started because %d were still running", c.Cycles, c.Failed, formatCounts(c.Errors), c.Skipped, res.ChurnInFlight)
		for _, h := range l.Hostile {
			what := map[string]string{
				KindStallHandshake: "half handshakes timed out",
				KindHalfClose:      "half-closed clients closed (the server noticed the FIN)",
				KindGarbage:        "protocol violations failed the connection",
				KindHTTPStall:      "stalled HTTP bodies timed out",
			}[h.Kind]
			if what == "" {
				continue // a trickled frame may honestly outlive a round
			}
			check(false, h.Kind+": "+what, h.Opened > 0 && h.Open == 0,
				"%d of %d closed by the server within their %.0fs round (%s)", h.ClosedByServer, h.Opened, res.RoundSeconds, formatCounts(h.CloseHow))
		}
	}
	s, e := res.Start, res.End
	if s == nil || e == nil {
		check(true, "server sampled", false, "no /proc figures for the server at the start and end: pass -pid with -url, or use -server")
		return cs
	}
	if w := res.WarmupSettle; w.RefFDs > 0 {
		check(true, "server fds after the warm-up", w.Reached, "%d before it, %d after (allowed +%d, within %v)", w.RefFDs, w.FDs, soakFDSlack, soakSettleMax)
	}
	check(true, "server fds", e.FDs <= s.FDs+soakFDSlack, "start %d, end %d (%+d; allowed +%d)", s.FDs, e.FDs, e.FDs-s.FDs, soakFDSlack)
	allowed := max(int64(float64(s.RSS)*soakRSSFraction), soakRSSSlack)
	check(true, "server RSS", e.RSS <= s.RSS+allowed, "start %.1f MiB, end %.1f MiB (%+.1f; allowed +%.1f: %.0f%% or %d MiB, whichever is more)",
		float64(s.RSS)/mib, float64(e.RSS)/mib, float64(e.RSS-s.RSS)/mib, float64(allowed)/mib, 100*soakRSSFraction, soakRSSSlack/mib)
	check(true, "server threads", e.Threads <= s.Threads+soakThreadSlack, "start %d, end %d (%+d; allowed +%d)", s.Threads, e.Threads, e.Threads-s.Threads, soakThreadSlack)
	for _, g := range soakGauges {
		sv, ok1 := s.Gauges[g]
		ev, ok2 := e.Gauges[g]
		if !ok1 || !ok2 {
			continue
		}
		slack := float64(soakGaugeSlack)
		if g == "go_goroutines" {
			slack = soakGoroutineSlack
		}
		check(true, "server "+g, ev <= sv+slack, "start %.0f, end %.0f (%+.0f; allowed +%.0f)", sv, ev, ev-sv, slack)
	}
	return cs
}

// verdict is the soak's one-line outcome.
func (s *SoakResult) verdict() string {
	var failed, warned []string
	required := 0
	for _, c := range s.Checks {
		if c.Required {
			required++
		}
		switch c.status() {
		case "FAIL":
			failed = append(failed, c.Name)
		case "WARN":
			warned = append(warned, c.Name)
		}
	}
	w := ""
	if len(warned) > 0 {
		w = fmt.Sprintf("; %d warning(s): %s", len(warned), strings.Join(warned, ", "))
	}
	if len(failed) > 0 {
		return "soak FAIL: " + strings.Join(failed, ", ") + w
	}
	return fmt.Sprintf("soak PASS: all %d required checks%s", required, w)
}

// failedChecks names the required checks that failed.
func (s *SoakResult) failedChecks() []string {
	var out []string
	for _, c := range s.Checks {
		if c.Required && !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// soakFailures is ErrSoakFailed naming every failed soak run, or nil.
func (r *Report) soakFailures() error {
	var failed []string
	for _, run := range r.Runs {
		if run.Soak != nil && !run.Soak.Pass {
			failed = append(failed, fmt.Sprintf("%s#%d %s: %s", run.Target, run.Repeat, run.Name, strings.Join(run.Soak.failedChecks(), ", ")))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrSoakFailed, strings.Join(failed, "; "))
}

// soakDetails are the soak's lines under the table.
func (s *SoakResult) details() []string {
	out := []string{s.verdict()}
	for _, c := range s.Checks {
		out = append(out, fmt.Sprintf("%s %s: %s", c.status(), c.Name, c.Detail))
	}
	if w := s.Warmup; w != nil {
		line := fmt.Sprintf("warm-up: one %.0fs round (%d churn cycles, %d slow consumers and readers, %d hostile clients)", s.RoundSeconds, w.Churn.Cycles, w.Slow.Opened+w.SlowReaders.Opened, hostileRun(w))
		if st := s.WarmupSettle; st.Reached {
			line += fmt.Sprintf("; the server was back to %d fds (%d before it) %.1fs later", st.FDs, st.RefFDs, st.Seconds)
		} else if st.RefFDs > 0 {
			line += fmt.Sprintf("; the server was not back within %v: %d fds, %d before it (the start sample is taken anyway)", soakSettleMax, st.FDs, st.RefFDs)
		}
		out = append(out, line)
	}
	if st := s.Settle; st.RefFDs > 0 {
		if st.Reached {
			out = append(out, fmt.Sprintf("after the last round the server was back to %d fds (%d at the start) %.1fs later", st.FDs, st.RefFDs, st.Seconds))
		} else {
			out = append(out, fmt.Sprintf("after the last round the server was not back within %v: %d fds, %d at the start", soakSettleMax, st.FDs, st.RefFDs))
		}
	}
	if l := s.Loops; l != nil {
		if c := l.Churn; c.Failed > 0 {
			out = append(out, fmt.Sprintf("churn failures: %s (first: %s)", formatCounts(c.Errors), c.FirstError))
		}
		for _, x := range []struct {
			name string
			t    SlowTally
		}{{"slow consumers (never read)", l.Slow}, {fmt.Sprintf("slow readers (%d KiB/s)", slowReadRate/kib), l.SlowReaders}} {
			line := fmt.Sprintf("%s: %d over %d rounds; the probe at each round's end found: %s; at most %d KiB read from one", x.name, x.t.Opened, l.Rounds, formatCounts(x.t.Fates), x.t.MaxBytes/kib)
			if x.t.Failed > 0 {
				line += fmt.Sprintf("; %d failed to connect (%s)", x.t.Failed, formatCounts(x.t.Errors))
			}
			out = append(out, line)
		}
		for _, h := range l.Hostile {
			line := fmt.Sprintf("hostile %s: %d run", h.Kind, h.Opened)
			if h.Failed > 0 {
				line += fmt.Sprintf(" (%d failed to connect: %s)", h.Failed, formatCounts(h.Errors))
			}
			line += fmt.Sprintf("; closed by the server within their round: %d", h.ClosedByServer)
			if h.ClosedByServer > 0 {
				line += fmt.Sprintf(" (%s; %.1fs to %.1fs after stalling, median %.1fs)", formatCounts(h.CloseHow), h.CloseAfterS.Min, h.CloseAfterS.Max, h.CloseAfterS.Median)
			}
			line += fmt.Sprintf("; still open at the round's end: %d", h.Open)
			out = append(out, line)
		}
	}
	if len(s.CounterDeltas) > 0 {
		keys := make([]string, 0, len(s.CounterDeltas))
		for k := range s.CounterDeltas {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s +%.0f", k, s.CounterDeltas[k])
		}
		out = append(out, "server counters, start to end: "+strings.Join(parts, ", "))
	}
	if len(s.Samples) > 0 {
		// At most a dozen, evenly spread: enough to see a trend.
		step := max(1, (len(s.Samples)+11)/12)
		var parts []string
		for i := 0; i < len(s.Samples); i += step {
			x := s.Samples[i]
			parts = append(parts, fmt.Sprintf("%.0fs %.1f/%d/%d", x.Seconds, float64(x.RSS)/mib, x.FDs, x.Threads))
		}
		out = append(out, "server during the soak (RSS MiB/fds/threads): "+strings.Join(parts, ", "))
	}
	return out
}

// hostileRun is how many hostile clients connected, over every kind.
func hostileRun(l *SoakLoops) int {
	n := 0
	for _, h := range l.Hostile {
		n += h.Opened
	}
	return n
}

// metrics are the soak's rows of the table.
func (s *SoakResult) metrics() []Metric {
	var ms []Metric
	add := func(name, unit string, v float64) { ms = append(ms, Metric{Name: name, Unit: unit, Value: v}) }
	srv := func(name, unit string, v float64) {
		ms = append(ms, Metric{Name: name, Unit: unit, Value: v, Server: true})
	}
	add("soak duration", "s", s.Seconds)
	if l := s.Loops; l != nil {
		add("rounds", "", float64(l.Rounds))
	}
	if h := s.Honest; h != nil {
		d := h.Deliveries
		add("honest members", "", float64(h.Members))
		add("honest messages sent", "", float64(d.Sent))
		add("honest deliveries expected", "", float64(d.Expected))
		add("honest deliveries received", "", float64(d.Received))
		add("honest lost", "", float64(d.Lost))
		add("honest duplicates", "", float64(d.Duplicates))
		add("honest corrupt", "", float64(d.Corrupt))
		add("honest latency p50", "ms", h.Latency.P50)
		add("honest latency p99", "ms", h.Latency.P99)
		add("honest latency max", "ms", h.Latency.Max)
		add("honest members closed by server", "", float64(h.MembersClosed))
	}
	if b := s.Busy; b != nil {
		add("busy room messages sent", "", float64(b.Deliveries.Sent))
		add("busy room lost", "", float64(b.Deliveries.Lost))
		add("busy room readers closed by server", "", float64(b.MembersClosed))
	}
	if l := s.Loops; l != nil {
		add("churn cycles", "", float64(l.Churn.Cycles))
		add("churn cycles failed", "", float64(l.Churn.Failed))
		add("churn cycles skipped", "", float64(l.Churn.Skipped))
		add("churn cycle p99", "ms", l.ChurnLatency.P99)
		add("slow consumers", "", float64(l.Slow.Opened))
		add("slow closed by server", "", float64(l.Slow.closed()))
		add("slow closed with 1008", "", float64(l.Slow.Fates["close 1008"]))
		add("slow readers", "", float64(l.SlowReaders.Opened))
		add("slow readers closed by server", "", float64(l.SlowReaders.closed()))
		add("slow readers closed with 1008", "", float64(l.SlowReaders.Fates["close 1008"]))
		add("hostile clients run", "", float64(hostileRun(l)))
		for _, h := range l.Hostile {
			add(h.Kind+" run", "", float64(h.Opened))
			add(h.Kind+" closed by server", "", float64(h.ClosedByServer))
		}
	}
	if a, b := s.Start, s.End; a != nil && b != nil {
		srv("server RSS start", "MiB", float64(a.RSS)/mib)
		srv("server RSS end", "MiB", float64(b.RSS)/mib)
		srv("server RSS growth", "MiB", float64(b.RSS-a.RSS)/mib)
		srv("server RSS peak", "MiB", float64(s.PeakRSS)/mib)
		srv("server fds start", "", float64(a.FDs))
		srv("server fds end", "", float64(b.FDs))
		srv("server fds growth", "", float64(b.FDs-a.FDs))
		srv("server fds peak", "", float64(s.PeakFDs))
		srv("server threads start", "", float64(a.Threads))
		srv("server threads end", "", float64(b.Threads))
		for _, g := range soakGauges {
			if v, ok := a.Gauges[g]; ok {
				srv("server "+g+" start", "", v)
			}
			if v, ok := b.Gauges[g]; ok {
				srv("server "+g+" end", "", v)
			}
		}
	}
	add("soak checks failed", "", float64(len(s.failedChecks())))
	return ms
}
