package bench

// The soak's verdict: its checks, and its lines and rows in the report.

import (
	"fmt"
	"sort"
	"strings"
)

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
