package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	text := `# TYPE chatd_connections gauge
chatd_connections 103
chatd_sockets 104
# TYPE chatd_closed_total counter
chatd_closed_total{reason="slow_consumer"} 20
chatd_closed_total{reason="a b}"} 3
go_goroutines 12 1700000000000
broken_line
bad_value x
`
	got := parseMetrics(strings.NewReader(text))
	want := map[string]float64{
		"chatd_connections": 103, "chatd_sockets": 104, `chatd_closed_total{reason="slow_consumer"}`: 20,
		`chatd_closed_total{reason="a b}"}`: 3, "go_goroutines": 12,
	}
	if len(got) != len(want) {
		t.Errorf("parsed %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// cleanSoak is a soak result that passes every check.
func cleanSoak() *SoakResult {
	phase := func(members int, sent int64) *PhaseResult {
		d := Deliveries{Sent: sent, Expected: sent * int64(members-1), Received: sent * int64(members-1)}
		return &PhaseResult{Members: members, Deliveries: d}
	}
	hostile := func(kind string) HostileResult {
		return HostileResult{Kind: kind, HostileTally: HostileTally{Asked: 10, Opened: 10, CloseHow: map[string]int{"EOF": 10}}, ClosedByServer: 10}
	}
	res := &SoakResult{
		RoundSeconds: 15,
		Honest:       phase(100, 1000),
		Busy:         phase(3, 4096),
		WarmupBusy:   phase(3, 1024),
		WarmupSettle: SettleResult{Reached: true, FDs: 110, RefFDs: 110},
		Loops: &SoakLoops{
			Rounds:      4,
			Churn:       ChurnTally{Cycles: 100},
			Slow:        SlowTally{Opened: 8, Fates: map[string]int{"close 1008": 8}},
			SlowReaders: SlowTally{Opened: 8, Fates: map[string]int{"close 1008": 8}},
		},
		Start: &SoakSample{RSS: 20 << 20, FDs: 110, Threads: 9, Gauges: map[string]float64{"chatd_sockets": 103, "go_goroutines": 40}},
		End:   &SoakSample{RSS: 21 << 20, FDs: 112, Threads: 9, Gauges: map[string]float64{"chatd_sockets": 103, "go_goroutines": 44}},
	}
	for _, k := range HostileKinds {
		res.Loops.Hostile = append(res.Loops.Hostile, hostile(k))
	}
	return res
}

func verdictOf(res *SoakResult) (pass bool, failed, warned []string) {
	res.Checks = soakChecks(res)
	pass = true
	for _, c := range res.Checks {
		switch c.status() {
		case "FAIL":
			pass = false
			failed = append(failed, c.Name)
		case "WARN":
			warned = append(warned, c.Name)
		}
	}
	return pass, failed, warned
}

func TestSoakChecks(t *testing.T) {
	if pass, failed, warned := verdictOf(cleanSoak()); !pass || len(warned) > 0 {
		t.Fatalf("clean soak: failed %v, warned %v", failed, warned)
	}
	for _, c := range []struct {
		name   string
		change func(*SoakResult)
		fail   string // a required check that must fail; "" for none
		warn   string // a check that must only warn
	}{
		{"fds grew", func(r *SoakResult) { r.End.FDs = r.Start.FDs + soakFDSlack + 1 }, "server fds", ""},
		{"fds within slack", func(r *SoakResult) { r.End.FDs = r.Start.FDs + soakFDSlack }, "", ""},
		{"RSS over 8 MiB", func(r *SoakResult) { r.End.RSS = r.Start.RSS + 9<<20 }, "server RSS", ""},
		// 10% of 200 MiB is more than 8 MiB.
		{"RSS within 10%", func(r *SoakResult) { r.Start.RSS, r.End.RSS = 200<<20, 215<<20 }, "", ""},
		{"threads", func(r *SoakResult) { r.End.Threads = r.Start.Threads + soakThreadSlack + 1 }, "server threads", ""},
		{"sockets", func(r *SoakResult) { r.End.Gauges["chatd_sockets"] += soakGaugeSlack + 1 }, "server chatd_sockets", ""},
		{"goroutines", func(r *SoakResult) { r.End.Gauges["go_goroutines"] += soakGoroutineSlack + 1 }, "server go_goroutines", ""},
		{"gauge absent at the end", func(r *SoakResult) { r.End.Gauges = nil }, "", ""},
		{"honest loss", func(r *SoakResult) { r.Honest.Deliveries.Received--; r.Honest.Deliveries.Settle() }, "honest room: every message delivered", ""},
		{"nothing sent", func(r *SoakResult) { r.Honest.Deliveries = Deliveries{} }, "honest room: every message delivered", ""},
		{"busy loss in the warm-up", func(r *SoakResult) { r.WarmupBusy.Deliveries.Received--; r.WarmupBusy.Deliveries.Settle() }, "busy room readers: every message delivered", ""},
		{"reader closed", func(r *SoakResult) { r.Busy.MembersClosed = 1 }, "long-lived members kept", ""},
		{"reader closed in the warm-up", func(r *SoakResult) { r.WarmupBusy.MembersClosed, r.Busy.MembersClosed = 1, 1 }, "long-lived members kept", ""},
		{"slow left open", func(r *SoakResult) { r.Loops.Slow.Fates = map[string]int{"close 1008": 7, "open": 1} }, "slow consumers closed by the server", ""},
		{"slow EOF", func(r *SoakResult) { r.Loops.SlowReaders.Fates = map[string]int{"close 1008": 7, "EOF": 1} }, "", "slow readers closed with 1008"},
		{"churn failure", func(r *SoakResult) { r.Loops.Churn.Failed = 1 }, "churn cycles", ""},
		{"FIN missed", func(r *SoakResult) { r.Loops.Hostile[2].Open = 3 }, "", "half-close: half-closed clients closed (the server noticed the FIN)"},
		{"warm-up not settled", func(r *SoakResult) { r.WarmupSettle.Reached = false }, "server fds after the warm-up", ""},
		{"no server figures", func(r *SoakResult) { r.End = nil }, "server sampled", ""},
	} {
		res := cleanSoak()
		c.change(res)
		pass, failed, warned := verdictOf(res)
		switch {
		case c.fail == "" && !pass:
			t.Errorf("%s: failed %v", c.name, failed)
		case c.fail != "" && (pass || !slices.Contains(failed, c.fail)):
			t.Errorf("%s: failed %v, want %q among them", c.name, failed, c.fail)
		case c.warn != "" && (!pass || !slices.Contains(warned, c.warn)):
			t.Errorf("%s: failed %v, warned %v, want only a warning %q", c.name, failed, warned, c.warn)
		}
	}
}

func TestSoakConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"short round", Config{Round: 3 * time.Second}, "at least -probe-wait"},
		{"duration under a round", Config{Duration: 10 * time.Second, Round: 15 * time.Second}, "shorter than one -round"},
		{"churn rate", Config{ChurnRate: 500}, "-churn-rate 500"},
		{"negative churn rate", Config{ChurnRate: -1}, "-churn-rate -1"},
		{"attackers", Config{Attackers: 4}, "at least 5 hostile clients"},
		{"slow", Config{Slow: 1}, "at least 2 slow consumers"},
		{"churn close", Config{ChurnClose: "rst"}, "one of ws, abort, fin, mixed"},
		{"pusher", Config{Protocol: "pusher"}, "for the broadcast and recovery scenarios"},
		{"instances", Config{Instances: 2}, "only the density scenario"},
	} {
		cfg := c.cfg
		cfg.Scenario, cfg.Server = "soak", "./chatd -addr {addr}"
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	other := Config{Scenario: "churn", Server: "./chatd -addr {addr}", ChurnClose: CloseMixed}
	if err := other.Validate(); err == nil || !strings.Contains(err.Error(), "one of ws, abort, fin") {
		t.Errorf("mixed outside the soak: %v", err)
	}
	other = Config{Scenario: "broadcast", Server: "./chatd -addr {addr}", Round: time.Second}
	if err := other.Validate(); err == nil || !strings.Contains(err.Error(), "for the soak scenario") {
		t.Errorf("-round outside the soak: %v", err)
	}

	cfg := Config{Scenario: "soak", Server: "./chatd -addr {addr}"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Duration != 10*time.Minute || cfg.Round != 15*time.Second || cfg.Conns != 1000 || cfg.Rate != 20 || cfg.ChurnRate != 20 ||
		cfg.Slow != 10 || cfg.Attackers != 200 || cfg.ChurnClose != CloseMixed || cfg.Procs != 1 {
		t.Errorf("soak defaults %+v", cfg)
	}
	// Well under one process's 20,000 files, on either side.
	if n := cfg.totalConns(); n > 2000 {
		t.Errorf("default soak holds up to %d connections", n)
	}
	h := cfg.soakHostile()
	total := 0
	for _, k := range HostileKinds {
		if h[k] == 0 {
			t.Errorf("no %s clients by default: %v", k, h)
		}
		total += h[k]
	}
	if total != 200 || h[KindHTTPStall] != 4 {
		t.Errorf("hostile split %v", h)
	}
}
