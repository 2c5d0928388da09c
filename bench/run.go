package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
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
		t.SharedPort = cfg.ReusePort && t.Command != ""
		if t.Command == "" {
			t.PIDs = cfg.PIDs
			t.MetricsAddr = cfg.MetricsAddr
		}
		if strings.Contains(t.Command, natsPlaceholder) {
			t.NATS, t.NATSJS = cfg.NATS, cfg.NATSJS
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
	if t.nats != nil {
		run.NATSURL, run.NATSPID = t.nats.url, t.nats.pid
		run.Notes = append(run.Notes, fmt.Sprintf("servers: %d x %s + nats-server (%s, pid %d); server CPU, CPU per delivery and RSS are sums over the %d processes",
			len(t.inst), nameOf(t.Command), t.nats.url, t.nats.pid, len(t.inst)+1))
	}
	if t.hook != nil {
		run.Notes = append(run.Notes, fmt.Sprintf("publish hook receiver ({hook}) at %s (pid %d) answers every POST allow; its CPU is not in the server figures (rows hook receiver CPU, server + hook receiver CPU per delivery)",
			t.hook.url, t.hook.pid))
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
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if r.cfg.MinAvailableMiB > 0 {
		min := int64(r.cfg.MinAvailableMiB) << 20
		stopGuard := memoryGuard(ctx, min, func(avail int64) {
			cancel(errLowMemory(avail, min, r.fl.counters().Connected))
			r.fl.kill()
			t.kill()
		})
		defer stopGuard()
	}
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
	case "recovery":
		run.Recovery, err = r.recovery(ctx)
	}
	run.ClientCPU = (r.fl.clientCPU() - cpu0).Seconds()
	run.Seconds = time.Since(run.Started).Seconds()
	run.ServerOutput = t.serverOutput()
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		err = cause // the memory guard stopped the run
	}
	if err != nil {
		run.Error = err.Error()
		return run, fmt.Errorf("chatbench: %s against %s (%s): %w", r.cfg.Scenario, t.Name, t.URL, err)
	}
	run.Metrics = run.metrics()
	return run, nil
}

// name returns a fresh group or room name.
func (r *runner) name(prefix string) string {
	r.seq++
	return fmt.Sprintf("%s-%d", prefix, r.seq)
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
