package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// The end-to-end tests run every scenario at small scale against the
// baseline and against chatd, both built into a temporary directory and
// started by chatbench itself (-server), as a user would.

var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	// -procs re-executes this test binary as a worker.
	RunWorkerIfAsked()
	dir, err := os.MkdirTemp("", "chatbench-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// servers builds the baseline and chatd once and returns their -server
// commands by name.
func servers(t *testing.T) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds and starts servers")
	}
	buildOnce.Do(func() {
		for name, pkg := range map[string]string{"baseline": "chatd/bench/baseline", "chatd": "chatd/cmd/chatd"} {
			if _, buildErr = testutil.Build(pkg, binDir, name); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return map[string]string{
		"baseline": filepath.Join(binDir, "baseline") + " -addr {addr}",
		"chatd":    filepath.Join(binDir, "chatd") + " -addr {addr} -admin-addr {admin} -log-level error",
	}
}

// runBench runs chatbench with args and returns the report and the table.
func runBench(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	rep, table, err := runChatbench(t, args...)
	if err != nil {
		t.Fatalf("chatbench %s: %v\n%s", strings.Join(args, " "), err, table)
	}
	return rep, table
}

// runChatbench runs chatbench with args, with no progress display, and
// returns what Run returns and the table it printed.
func runChatbench(t *testing.T, args ...string) (*Report, string, error) {
	t.Helper()
	cfg, err := ParseArgs(args, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	off := false
	cfg.Stdout, cfg.Progress = &out, &off
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg)
	return rep, out.String(), err
}

// readReport reads back the report a run wrote with -json.
func readReport(t *testing.T, path string) Report {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// checkClean asserts that a phase delivered every message exactly once,
// intact.
func checkClean(t *testing.T, what string, p *PhaseResult) {
	t.Helper()
	d := p.Deliveries
	want := ExpectedDeliveries(d.Sent, p.Members)
	if p.Protocol == ProtocolPusher {
		want = d.Sent * int64(p.Members) // publishers are not members
	}
	if d.Sent == 0 || d.Expected == 0 || d.Expected != want {
		t.Errorf("%s: sent %d to %d members, expected %d", what, d.Sent, p.Members, d.Expected)
	}
	if d.Received != d.Expected || d.Lost != 0 || d.Duplicates != 0 || d.Corrupt != 0 || p.Stray != 0 {
		t.Errorf("%s: %+v, stray %d: want every delivery once and intact", what, d, p.Stray)
	}
	if p.Latency.Count != uint64(d.Received) || p.Latency.P50 <= 0 || p.Latency.Max < p.Latency.P99 {
		t.Errorf("%s: latency %+v", what, p.Latency)
	}
}

func TestE2EDensity(t *testing.T) {
	for name, cmd := range servers(t) {
		t.Run(name, func(t *testing.T) {
			rep, table := runBench(t, "density", "-conns", "300", "-rooms", "3", "-hold", "300ms", "-server", cmd)
			d := rep.Runs[0].Density
			if d.Connect.Opened != 300 || d.Connect.Failed != 0 || d.OpenAfterHold != 300 {
				t.Errorf("opened %d, failed %d, open after hold %d", d.Connect.Opened, d.Connect.Failed, d.OpenAfterHold)
			}
			if !rep.Runs[0].HaveServer || d.RSSPerConn <= 0 || d.FDsAfter < 300 || d.CPUConnect < 0 {
				t.Errorf("server figures: rss/conn %v fds %d cpu %v", d.RSSPerConn, d.FDsAfter, d.CPUConnect)
			}
			if len(d.Samples) == 0 {
				t.Errorf("no RSS samples")
			}
			if !strings.Contains(table, "server RSS per connection (KiB)") {
				t.Errorf("table lacks RSS per connection:\n%s", table)
			}
		})
	}
}

func TestE2EBroadcast(t *testing.T) {
	for name, cmd := range servers(t) {
		t.Run(name, func(t *testing.T) {
			rep, _ := runBench(t, "broadcast", "-conns", "20", "-senders", "3", "-messages", "100", "-server", cmd)
			p := rep.Runs[0].Broadcast
			checkClean(t, "closed loop", p)
			if p.Members != 20 || p.Deliveries.Sent != 300 || p.AckTimeouts != 0 {
				t.Errorf("members %d, sent %d, ack timeouts %d", p.Members, p.Deliveries.Sent, p.AckTimeouts)
			}
			// CPU comes in 10 ms ticks: a small phase may honestly read 0.
			want := p.ServerCPU * 1e6 / float64(p.Deliveries.Received)
			if !rep.Runs[0].HaveServer || p.ServerCPU < 0 || math.Abs(p.CPUPerDelivery-want) > 1e-9*(1+want) || p.DeliveriesPerSec <= 0 || p.RSSPeak <= 0 {
				t.Errorf("server CPU %v s, %v µs/delivery, %v deliveries/s, RSS peak %d", p.ServerCPU, p.CPUPerDelivery, p.DeliveriesPerSec, p.RSSPeak)
			}

			rep, _ = runBench(t, "broadcast", "-conns", "10", "-senders", "2", "-messages", "100", "-rate", "400", "-binary", "-server", cmd)
			p = rep.Runs[0].Broadcast
			checkClean(t, "open loop", p)
			// 200 messages at 400/s take about half a second to send.
			if p.SendSeconds < 0.4 || p.SendSeconds > 5 {
				t.Errorf("open loop at 400/s sent 200 messages in %.2fs", p.SendSeconds)
			}
		})
	}
}

// TestE2EBroadcastHook: {hook} starts a receiver that chatd's publish hook
// POSTs every message to; the phase counts its POSTs (one per message
// sent) and its CPU apart from the server's; the hook-off server of the
// same invocation has none.
func TestE2EBroadcastHook(t *testing.T) {
	chatd := servers(t)["chatd"]
	rep, table := runBench(t, "broadcast", "-conns", "20", "-senders", "3", "-messages", "100",
		"-server", chatd+" -publish-hook-url {hook}", "-server-name", "hook-on", "-compare", chatd, "-compare-name", "hook-off")
	on, off := rep.Runs[0].Broadcast, rep.Runs[1].Broadcast
	checkClean(t, "hook on", on)
	checkClean(t, "hook off", off)
	if !on.Hook || on.HookPosts != on.Deliveries.Sent || on.HookCPU < 0 {
		t.Errorf("hook on: hook %v, %d POSTs for %d messages, receiver CPU %v s", on.Hook, on.HookPosts, on.Deliveries.Sent, on.HookCPU)
	}
	if want := on.CPUPerDelivery + on.HookCPUPerDelivery; math.Abs(on.ServerAndHookPerDeliv-want) > 1e-9*(1+want) {
		t.Errorf("server + hook receiver CPU per delivery %v, want %v", on.ServerAndHookPerDeliv, want)
	}
	if off.Hook || off.HookPosts != 0 {
		t.Errorf("hook off: hook %v, %d POSTs", off.Hook, off.HookPosts)
	}
	if !strings.Contains(table, "hook POSTs") || !strings.Contains(table, "publish hook receiver ({hook}) at http://127.0.0.1:") {
		t.Errorf("table lacks the hook rows or note:\n%s", table)
	}
}

func TestE2EBroadcastPusher(t *testing.T) {
	chatd := servers(t)["chatd"]
	// Members subscribe over Pusher protocol 7, senders publish through
	// the signed HTTP API; closed loop.
	rep, table := runBench(t, "broadcast", "-protocol", "pusher", "-conns", "20", "-senders", "3", "-messages", "100", "-server", chatd)
	p := rep.Runs[0].Broadcast
	checkClean(t, "pusher closed loop", p)
	if p.Protocol != ProtocolPusher || p.Members != 20 || p.Deliveries.Sent != 300 || p.Deliveries.Expected != 300*20 || p.AckTimeouts != 0 || p.SendErrors != 0 || p.NotJoined != 0 {
		t.Errorf("protocol %q, members %d, sent %d, expected %d, ack timeouts %d, send errors %d (%s), not joined %d",
			p.Protocol, p.Members, p.Deliveries.Sent, p.Deliveries.Expected, p.AckTimeouts, p.SendErrors, p.FirstSendError, p.NotJoined)
	}
	if !rep.Runs[0].HaveServer || p.ServerCPU < 0 || p.DeliveriesPerSec <= 0 || p.RSSPeak <= 0 {
		t.Errorf("server CPU %v s, %v deliveries/s, RSS peak %d", p.ServerCPU, p.DeliveriesPerSec, p.RSSPeak)
	}
	if !strings.Contains(table, "POST /apps/chatd/events") {
		t.Errorf("table does not say how it published:\n%s", table)
	}

	// raw,pusher: the same server command twice (A raw, B pusher), open
	// loop, members spread over two worker processes.
	rep, table = runBench(t, "broadcast", "-protocol", "raw,pusher", "-conns", "12", "-senders", "2", "-messages", "50", "-rate", "500", "-procs", "2", "-server", chatd)
	var order []string
	for _, run := range rep.Runs {
		order = append(order, run.Target+":"+run.Name+":"+run.Broadcast.Protocol)
		checkClean(t, run.Name, run.Broadcast)
	}
	if strings.Join(order, ",") != "A:chatd (raw):raw,B:chatd (pusher):pusher" {
		t.Errorf("runs %v", order)
	}
	// CPU comes in 10 ms ticks: a phase this small may read 0, and then
	// there is no ratio to print.
	if !strings.Contains(table, "pusher/raw server CPU per delivery") && rep.Runs[0].Broadcast.CPUPerDelivery > 0 && rep.Runs[1].Broadcast.CPUPerDelivery > 0 {
		t.Errorf("table lacks the pusher/raw ratio:\n%s", table)
	}

	// A wrong secret is a clear error, not a hang or a silent loss.
	cfg, err := ParseArgs([]string{"broadcast", "-protocol", "pusher", "-app-secret", "wrong", "-conns", "3", "-senders", "1", "-server", chatd}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	off := false
	cfg.Stdout, cfg.Progress = &bytes.Buffer{}, &off
	start := time.Now()
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "401") || time.Since(start) > 10*time.Second {
		t.Errorf("wrong secret: %v after %v", err, time.Since(start))
	}
}

func TestE2EChurn(t *testing.T) {
	for name, cmd := range servers(t) {
		t.Run(name, func(t *testing.T) {
			rep, _ := runBench(t, "churn", "-conns", "100", "-waves", "2", "-server", cmd)
			c := rep.Runs[0].Churn
			if len(c.Waves) != 2 || c.Failures != 0 {
				t.Errorf("%d waves, %d failures", len(c.Waves), c.Failures)
			}
			for _, w := range c.Waves {
				if w.Reconnect.Opened != 100 {
					t.Errorf("wave %d reopened %d", w.Wave, w.Reconnect.Opened)
				}
			}
			checkClean(t, "after churn", c.Check)
			if c.FDsAfterClose > c.FDsBefore+2 {
				t.Errorf("server holds %d fds after every client left (%d before)", c.FDsAfterClose, c.FDsBefore)
			}
		})
	}
	// The abrupt variant: every client vanishes with a reset.
	rep, _ := runBench(t, "churn", "-conns", "50", "-waves", "1", "-churn-close", "abort", "-server", servers(t)["chatd"])
	if c := rep.Runs[0].Churn; c.Failures != 0 || c.Check.Deliveries.Lost != 0 {
		t.Errorf("abort churn: %d failures, %d lost", c.Failures, c.Check.Deliveries.Lost)
	}
}

func TestE2ESlowloris(t *testing.T) {
	for name, cmd := range servers(t) {
		t.Run(name, func(t *testing.T) {
			rep, _ := runBench(t, "slowloris", "-conns", "20", "-attackers", "30", "-messages", "50", "-server", cmd)
			s := rep.Runs[0].Slowloris
			checkClean(t, "clean", s.Clean)
			checkClean(t, "attacked", s.Attacked)
			a := s.Attackers
			if a.Handshake != 15 || a.Frame != 15 || a.Established != 30 {
				t.Errorf("attackers: %+v", a)
			}
			// Really stalled: every attacker still held its socket when
			// the honest phase began and ended (no handshake timeout is
			// this short in either server).
			if a.OpenAtStart != 30 || a.OpenAtEnd != 30 {
				t.Errorf("attackers open at start %d, at end %d; closed: %v", a.OpenAtStart, a.OpenAtEnd, a.CloseHow)
			}
			// Late joiners connect after the attacked phase, so the clean
			// and attacked phases fan out to the same 20 members.
			if s.LateJoin.Opened != lateJoiners(20) || s.Attacked.Members != 20 || s.Clean.Members != 20 {
				t.Errorf("late joiners %d, attacked members %d", s.LateJoin.Opened, s.Attacked.Members)
			}
		})
	}
}

func TestE2ESlowloris_HandshakeTimeout(t *testing.T) {
	// With a short handshake timeout the server closes the mid-handshake
	// attackers; chatbench reports when and how.
	cmd := servers(t)["chatd"] + " -handshake-timeout 300ms"
	rep, _ := runBench(t, "slowloris", "-conns", "10", "-attackers", "10", "-attack", "handshake", "-messages", "100", "-rate", "600", "-server", cmd)
	a := rep.Runs[0].Slowloris.Attackers
	if a.Established != 10 || a.OpenAtEnd != 0 || a.CloseAfter.Min < 0.2 {
		t.Errorf("handshake attackers: established %d, open at end %d, closed %v after %+v", a.Established, a.OpenAtEnd, a.CloseHow, a.CloseAfter)
	}
	checkClean(t, "attacked", rep.Runs[0].Slowloris.Attacked)
}

func TestE2ESlowConsumer(t *testing.T) {
	for name, cmd := range servers(t) {
		t.Run(name, func(t *testing.T) {
			// 4 senders x 300 x 8 KiB = 9.6 MiB offered to each slow member,
			// more than the kernel buffers hold, so the server must act.
			rep, _ := runBench(t, "slowconsumer", "-conns", "8", "-slow", "4", "-senders", "4", "-messages", "300", "-size", "8192", "-probe-wait", "2s", "-server", cmd)
			s := rep.Runs[0].SlowConsumer
			checkClean(t, "clean", s.Clean)
			checkClean(t, "with slow consumers", s.Loaded)
			if s.Established != 4 || s.Stalled != 4 {
				t.Errorf("slow consumers: %d connected, %d stalled; fates %v", s.Established, s.Stalled, s.Fates.Fates)
			}
			if s.Fates.MaxBytes >= s.OfferedEach {
				t.Errorf("a slow consumer could read all %d bytes offered: it did not stall", s.OfferedEach)
			}
			if name == "chatd" && s.Fates.Fates["close 1008"] != 4 {
				t.Errorf("chatd should close slow consumers with 1008; fates %v", s.Fates.Fates)
			}
		})
	}
}

func TestE2ECompareJSONPlotAndProcs(t *testing.T) {
	srv := servers(t)
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	rep, table := runBench(t, "broadcast", "-conns", "12", "-senders", "2", "-messages", "50", "-procs", "2", "-repeat", "2",
		"-server", srv["chatd"], "-compare", srv["baseline"], "-json", jsonPath, "-plot", plotPath)
	var order []string
	for _, run := range rep.Runs {
		order = append(order, run.Target+":"+run.Name)
		checkClean(t, run.Target+strconv.Itoa(run.Repeat), run.Broadcast)
	}
	if strings.Join(order, ",") != "A:chatd,B:baseline,A:chatd,B:baseline" {
		t.Errorf("run order %v", order)
	}
	if !strings.Contains(table, "A: chatd") || !strings.Contains(table, "B: baseline") || !strings.Contains(table, "B/A") {
		t.Errorf("table:\n%s", table)
	}
	back := readReport(t, jsonPath)
	if len(back.Runs) != 4 || back.Config.Procs != 2 || len(back.Args) == 0 || back.Args[1] != "broadcast" {
		t.Errorf("json: %d runs, procs %d, args %v", len(back.Runs), back.Config.Procs, back.Args)
	}
	found := false
	for _, s := range back.Summary {
		if s.Name == "deliveries/s" && s.Ratio > 0 {
			found = true
		}
		if s.Name == "server CPU per delivery" && len(s.Median) != 2 {
			t.Errorf("CPU per delivery summary %+v", s)
		}
	}
	if !found {
		t.Errorf("no deliveries/s ratio in the summary")
	}
	svg, err := os.ReadFile(plotPath)
	if err != nil || !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("delivery latency")) {
		t.Errorf("plot: %v, %d bytes", err, len(svg))
	}

	// Density over two worker processes and two source addresses.
	rep, _ = runBench(t, "density", "-conns", "200", "-procs", "2", "-source-ips", "2", "-hold", "100ms", "-server", srv["baseline"], "-plot", plotPath)
	if d := rep.Runs[0].Density; d.Connect.Opened != 200 || d.OpenAfterHold != 200 {
		t.Errorf("density over 2 procs: opened %d, open after hold %d", d.Connect.Opened, d.OpenAfterHold)
	}
}

// TestE2EDensityClientFigures: the client's own figures hold on every run
// of -repeat, not only the first: the worker processes give back what the
// earlier runs freed before the "before" sample (it came out negative
// before they did), and the client's CPU per connect is measured in the
// workers around their dials.
func TestE2EDensityClientFigures(t *testing.T) {
	srv := servers(t)
	rep, table := runBench(t, "density", "-conns", "3000", "-procs", "2", "-repeat", "3", "-hold", "100ms", "-server", srv["chatd"])
	if len(rep.Runs) != 3 {
		t.Fatalf("%d runs, want 3\n%s", len(rep.Runs), table)
	}
	for i, run := range rep.Runs {
		d := run.Density
		if d.Connect.Opened != 3000 {
			t.Fatalf("run %d: opened %d of 3000", i+1, d.Connect.Opened)
		}
		// A member holds a reader goroutine (its stack) and its buffers:
		// 6-8 KiB measured on every run; the runs after the first came out
		// at 0.5-2 KiB while the workers still held the first's heap.
		if kb := d.ClientRSSPerConn / 1024; kb < 3 || kb > 64 {
			t.Errorf("run %d: client RSS per connection %.2f KiB, want a few KiB\n%s", i+1, kb, table)
		}
		if us := d.Connect.ClientCPUPerConnect; us <= 0 || us > 10000 {
			t.Errorf("run %d: client CPU per connect %.1f µs", i+1, us)
		}
	}
	if !strings.Contains(table, "client CPU per connect") {
		t.Errorf("no client CPU per connect row:\n%s", table)
	}
}

func TestE2EClearErrors(t *testing.T) {
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Scenario: "density", URL: "ws://127.0.0.1:" + strconv.Itoa(port), Stdout: &bytes.Buffer{}}
	start := time.Now()
	_, err = Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || time.Since(start) > 10*time.Second {
		t.Errorf("unreachable server: %v after %v", err, time.Since(start))
	}
	cfg = Config{Scenario: "density", Server: "exit 3 {addr}", Stdout: &bytes.Buffer{}}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "exited before listening") {
		t.Errorf("server that dies: %v", err)
	}
	cfg = Config{Scenario: "density", URL: "ws://192.0.2.1:80", Stdout: &bytes.Buffer{}}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "non-loopback") {
		t.Errorf("non-loopback: %v", err)
	}
}

func TestE2EDensityInstances(t *testing.T) {
	srv := servers(t)
	// Two instances per side, over two client processes and two source
	// addresses, chatd against the baseline.
	rep, table := runBench(t, "density", "-conns", "301", "-rooms", "2", "-instances", "2", "-procs", "2", "-source-ips", "2", "-hold", "200ms",
		"-server", srv["chatd"], "-compare", srv["baseline"])
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	for _, run := range rep.Runs {
		d := run.Density
		if run.Instances != 2 || len(run.PIDs) != 2 || run.PIDs[0] == run.PIDs[1] || strings.Count(run.URL, "ws://") != 2 {
			t.Errorf("%s: instances %d, pids %v, url %q", run.Name, run.Instances, run.PIDs, run.URL)
		}
		if d.Connect.Opened != 301 || d.OpenAfterHold != 301 || len(d.Instances) != 2 {
			t.Fatalf("%s: opened %d, open after hold %d, %d instances", run.Name, d.Connect.Opened, d.OpenAfterHold, len(d.Instances))
		}
		// Round-robin: 151 and 150.
		var rssGrowth int64
		fds := 0
		for k, x := range d.Instances {
			if x.Opened != 151-k || x.OpenAfterHold != x.Opened || x.PID != run.PIDs[k] {
				t.Errorf("%s instance %d: %+v", run.Name, k+1, x)
			}
			// Each server holds its own share, not the other's.
			if x.FDsAfter < x.Opened || x.FDsAfter > x.Opened+64 {
				t.Errorf("%s instance %d: %d fds for %d connections", run.Name, k+1, x.FDsAfter, x.Opened)
			}
			rssGrowth += x.RSSAfterHold - x.RSSBefore
			fds += x.FDsAfter
		}
		if !run.HaveServer || d.FDsAfter != fds || d.RSSAfterHold-d.RSSBefore != rssGrowth || d.RSSPerConn <= 0 {
			t.Errorf("%s: sums: fds %d (instances %d), RSS growth %d (instances %d), per conn %v", run.Name, d.FDsAfter, fds, d.RSSAfterHold-d.RSSBefore, rssGrowth, d.RSSPerConn)
		}
		if want := float64(rssGrowth) / 301; math.Abs(d.RSSPerConn-want) > 1e-6 {
			t.Errorf("%s: RSS per connection %v, want total growth / total connections %v", run.Name, d.RSSPerConn, want)
		}
	}
	for _, want := range []string{"2 server instances per server", "instance 1 connections", "instance 2 RSS per connection (KiB)", "instance 2 (ws://127.0.0.1:"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	// Servers already running, given as a -url list; the PIDs are found by
	// port.
	var urls []string
	for i := 0; i < 2; i++ {
		in, err := startInstance(context.Background(), srv["chatd"], 0, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer in.stop()
		urls = append(urls, in.url)
	}
	rep, _ = runBench(t, "density", "-conns", "40", "-hold", "100ms", "-url", strings.Join(urls, ","))
	run := rep.Runs[0]
	if d := run.Density; d.Connect.Opened != 40 || len(d.Instances) != 2 || d.Instances[0].Opened != 20 || d.Instances[1].OpenAfterHold != 20 || !run.HaveServer || d.FDsAfter < 40 {
		t.Errorf("-url list: opened %d, instances %+v, have server %v, fds %d", d.Connect.Opened, d.Instances, run.HaveServer, d.FDsAfter)
	}
}

// TestE2EDensityReusePort: -reuse-port starts the instances on one port
// (chatd -reuse-port), the client dials that one address, and each
// instance's share, chosen by the kernel, is counted from its fds; the
// shares add up to every connection. The kernel figures and the client's
// memory are reported too.
func TestE2EDensityReusePort(t *testing.T) {
	srv := servers(t)
	rep, table := runBench(t, "density", "-conns", "300", "-instances", "3", "-reuse-port", "-hold", "200ms",
		"-server", srv["chatd"]+" -reuse-port")
	run := rep.Runs[0]
	d := run.Density
	if run.Instances != 3 || len(run.PIDs) != 3 || strings.Count(run.URL, "ws://") != 1 {
		t.Fatalf("instances %d, pids %v, url %q: want 3 processes behind one URL", run.Instances, run.PIDs, run.URL)
	}
	if d.Connect.Opened != 300 || d.OpenAfterHold != 300 || len(d.Instances) != 3 {
		t.Fatalf("opened %d, open after hold %d, %d instances", d.Connect.Opened, d.OpenAfterHold, len(d.Instances))
	}
	sum, busy := 0, 0
	for k, x := range d.Instances {
		if x.URL != d.Instances[0].URL || x.PID != run.PIDs[k] || x.OpenAfterHold != x.Opened {
			t.Errorf("instance %d: %+v", k+1, x)
		}
		sum += x.Opened
		if x.Opened > 0 {
			busy++
		}
	}
	// 300 connections from many source ports: every listener gets some.
	if sum != 300 || busy != 3 {
		t.Errorf("shares %+v: sum %d over %d busy instances, want 300 over 3", d.Instances, sum, busy)
	}
	if d.KernelAfterHold.TCPInUse < 600 || d.KernelBefore.Slab <= 0 || d.ClientRSSAfterHold <= 0 {
		t.Errorf("kernel before %+v, after %+v, client RSS after %d", d.KernelBefore, d.KernelAfterHold, d.ClientRSSAfterHold)
	}
	for _, want := range []string{"3 server instances per server", "kernel slab per connection (KiB)", "client RSS per connection (KiB)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestE2ESoak(t *testing.T) {
	chatd := servers(t)["chatd"] + " -handshake-timeout 1s"
	jsonPath := filepath.Join(t.TempDir(), "soak.json")
	// A warm-up round and two measured ones, everything at once, over two
	// worker processes. The verdict depends on the server under test
	// (known defects fail it); what it must not depend on: that every
	// part ran, and that the honest room lost nothing at this rate.
	args := []string{"soak", "-duration", "10s", "-round", "5s", "-probe-wait", "1s", "-conns", "40", "-senders", "2", "-rate", "40",
		"-slow", "4", "-attackers", "20", "-churn-rate", "10", "-procs", "2", "-server", chatd, "-json", jsonPath}
	start := time.Now()
	rep, table, err := runChatbench(t, args...)
	if err != nil && !errors.Is(err, ErrSoakFailed) {
		t.Fatalf("soak: %v\n%s", err, table)
	}
	if len(rep.Runs) != 1 || rep.Runs[0].Soak == nil {
		t.Fatalf("no soak result:\n%s", table)
	}
	s := rep.Runs[0].Soak
	if (err == nil) != s.Pass || !strings.Contains(table, s.verdict()) {
		t.Errorf("verdict %q (pass %v) but Run returned %v", s.verdict(), s.Pass, err)
	}
	if !s.Pass {
		t.Logf("the soak found the server wanting (not this test's business):\n%s", table)
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Errorf("a 10s soak took %v", d)
	}
	checkClean(t, "honest room", s.Honest)
	if s.Honest.Members != 40 || s.Honest.Deliveries.Sent < 300 || s.Honest.MembersClosed != 0 {
		t.Errorf("honest room: %d members, %d sent, %d closed", s.Honest.Members, s.Honest.Deliveries.Sent, s.Honest.MembersClosed)
	}
	// A server may hold the flooder back: its bursts need not all go out.
	if n, w := s.Busy.Deliveries.Sent, s.WarmupBusy.Deliveries.Sent; n == 0 || n > 2*floodBurst || w == 0 || w > floodBurst {
		t.Errorf("flooder sent %d, %d in the warm-up", n, w)
	}
	l := s.Loops
	if l.Rounds != 2 || s.Warmup.Rounds != 1 {
		t.Errorf("%d rounds, %d warm-up", l.Rounds, s.Warmup.Rounds)
	}
	if l.Churn.Cycles < 50 || l.ChurnLatency.Count != uint64(l.Churn.Cycles) {
		t.Errorf("churn: %+v", l.Churn)
	}
	for _, x := range []SlowTally{l.Slow, l.SlowReaders} {
		if x.Opened != 4 || sumCounts(x.Fates) != 4 {
			t.Errorf("slow consumers: %+v", x)
		}
	}
	if len(l.Hostile) != len(HostileKinds) {
		t.Errorf("hostile kinds %+v", l.Hostile)
	}
	for _, h := range l.Hostile {
		if h.Opened == 0 || h.Opened != h.Asked || h.Opened != h.ClosedByServer+h.Open {
			t.Errorf("hostile %s: %+v", h.Kind, h)
		}
	}
	// Whatever else chatd does, it fails the connection of a protocol
	// violation (RFC 6455 section 7.1.7) and times out a half handshake.
	for _, h := range l.Hostile {
		if (h.Kind == KindGarbage || h.Kind == KindStallHandshake) && h.Open != 0 {
			t.Errorf("hostile %s: %d still open at their round's end (%v)", h.Kind, h.Open, h.CloseHow)
		}
	}
	if s.Start == nil || s.End == nil || s.Start.FDs < 40 || s.End.RSS <= 0 || len(s.Samples) == 0 || s.Start.Gauges["chatd_sockets"] < 40 {
		t.Errorf("server samples: start %+v, end %+v, %d during", s.Start, s.End, len(s.Samples))
	}
	if len(s.Checks) < 10 {
		t.Errorf("checks %+v", s.Checks)
	}
	for _, want := range []string{"server fds start", "honest lost", "half-close closed by server", "server fds after the warm-up", "slow readers (64 KiB/s)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	back := readReport(t, jsonPath)
	if bs := back.Runs[0].Soak; bs == nil || len(bs.Checks) != len(s.Checks) || bs.Pass != s.Pass || back.Config.Round != 5*time.Second {
		t.Errorf("json: %+v", back.Runs[0].Soak)
	}
}

func TestE2EBroadcastCluster(t *testing.T) {
	chatd := servers(t)["chatd"] + " -nats {nats}"
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	// Three chatd instances per side joined by a nats-server chatbench
	// starts; 300 members and 2 senders spread over them round-robin,
	// over two client processes. B is the same cluster again, with a
	// nats-server of its own.
	rep, table := runBench(t, "broadcast", "-conns", "300", "-senders", "2", "-messages", "50", "-instances", "3", "-procs", "2",
		"-nats", natsBin, "-server", chatd, "-compare", chatd)
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	seen := map[string]bool{}
	for _, run := range rep.Runs {
		p := run.Broadcast
		checkClean(t, run.Target, p)
		if p.Members != 300 || p.Deliveries.Sent != 100 || p.Instances != 3 || fmt.Sprint(p.SenderInstances) != "[0 1]" {
			t.Errorf("%s: members %d, sent %d, instances %d, sender instances %v", run.Target, p.Members, p.Deliveries.Sent, p.Instances, p.SenderInstances)
		}
		// Each message reaches the 200 members on the two instances
		// other than its sender's.
		if p.CrossInstance != 100*200 {
			t.Errorf("%s: %d deliveries crossed instances, want %d", run.Target, p.CrossInstance, 100*200)
		}
		if run.Instances != 3 || len(run.PIDs) != 3 || run.NATSPID == 0 || !strings.HasPrefix(run.NATSURL, "nats://127.0.0.1:") || seen[run.NATSURL] {
			t.Errorf("%s: instances %d, pids %v, nats %s pid %d (seen: %v)", run.Target, run.Instances, run.PIDs, run.NATSURL, run.NATSPID, seen)
		}
		seen[run.NATSURL] = true
		// Server figures are sums over the 3 chatd processes and the
		// nats-server.
		if !run.HaveServer || len(p.Processes) != 4 || p.Processes[3].Name != "nats-server" || p.Processes[3].PID != run.NATSPID {
			t.Fatalf("%s: processes %+v", run.Target, p.Processes)
		}
		var cpu float64
		for _, x := range p.Processes {
			cpu += x.CPU
			if x.RSSAfter <= 0 {
				t.Errorf("%s: %s RSS %d", run.Target, x.Name, x.RSSAfter)
			}
		}
		if math.Abs(cpu-p.ServerCPU) > 1e-6 || p.RSSPeak < p.Processes[3].RSSAfter {
			t.Errorf("%s: server CPU %v, processes' sum %v; RSS peak %d", run.Target, p.ServerCPU, cpu, p.RSSPeak)
		}
		// chatbench stopped its nats-server after the run.
		if err := syscall.Kill(run.NATSPID, 0); err == nil {
			t.Errorf("%s: nats-server pid %d still running", run.Target, run.NATSPID)
		}
	}
	for _, want := range []string{"3 instance(s) + nats-server", "deliveries across instances", "nats-server CPU (s)", "3 x chatd + nats-server"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestE2EBroadcastClusterFlood(t *testing.T) {
	chatd := servers(t)["chatd"] + " -nats {nats}"
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	// A flood from one node: 4 senders all on instance 2, 40 readers
	// round-robin over instances 1 and 3, open loop.
	rep, table := runBench(t, "broadcast", "-conns", "44", "-senders", "4", "-messages", "50", "-rate", "400", "-instances", "3",
		"-senders-on", "2", "-nats", natsBin, "-server", chatd)
	if len(rep.Runs) != 1 {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	p := rep.Runs[0].Broadcast
	checkClean(t, "flood", p)
	if p.Members != 44 || p.Deliveries.Sent != 200 || fmt.Sprint(p.SenderInstances) != "[1 1 1 1]" || fmt.Sprint(p.FloodReaders) != "[1 3]" {
		t.Errorf("members %d, sent %d, sender instances %v, readers on %v", p.Members, p.Deliveries.Sent, p.SenderInstances, p.FloodReaders)
	}
	// Every reader is on another instance than the senders: each message
	// crosses to all 40 of them, and to none of the 3 other senders.
	if p.CrossInstance != 200*40 {
		t.Errorf("%d deliveries crossed instances, want %d", p.CrossInstance, 200*40)
	}
	if p.MembersClosed != p.MembersClosedSenderInst+p.MembersClosedOther {
		t.Errorf("closed %d = %d + %d?", p.MembersClosed, p.MembersClosedSenderInst, p.MembersClosedOther)
	}
	for _, want := range []string{"members closed on senders' instances", "members closed on other instances", "flood: all 4 senders on instance 2, the readers round-robin over instances 1,3", "the 4 senders on instance 2, the 40 readers round-robin over instances 1,3"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
