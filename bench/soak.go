package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
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
