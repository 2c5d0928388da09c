package bench

import (
	"os"
	"strings"
	"testing"

	"chatd/bench/testutil"
)

func TestValidateRecovery(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"instances", Config{Scenario: "recovery", Server: "x {addr}", Instances: 2}, "make the instances one cluster"},
		{"nats-js alone", Config{Scenario: "recovery", Server: "x {addr}", NATSJS: true}, "give -nats"},
		{"reuse-port", Config{Scenario: "recovery", Server: "x {addr}", ReusePort: true}, "-reuse-port is not for it"},
		{"kill url", Config{Scenario: "recovery", URL: "ws://127.0.0.1:1", KillEvery: 1e9}, "with -url they are yours"},
		{"kill down", Config{Scenario: "recovery", Server: "x {addr}", KillEvery: 1e9, KillDown: 2e9}, "-kill-down 2s must be shorter"},
		{"kill down alone", Config{Scenario: "recovery", Server: "x {addr}", KillDown: 1e9}, "without -kill-every"},
		{"kill negative", Config{Scenario: "recovery", Server: "x {addr}", KillEvery: -1}, "must be positive"},
		{"kill broadcast", Config{Scenario: "broadcast", Server: "x {addr}", KillEvery: 1e9}, "for the recovery scenario"},
		{"procs", Config{Scenario: "recovery", Server: "x {addr}", Procs: 2}, "own process"},
		{"raw", Config{Scenario: "recovery", Server: "x {addr}", Protocol: "raw"}, "Pusher Channels only"},
		{"down", Config{Scenario: "recovery", Server: "x {addr}", CutEvery: 100e6, CutDown: 100e6}, "must be shorter"},
		{"rate", Config{Scenario: "recovery", Server: "x {addr}", Rate: -1}, "-rate"},
		{"not recovery", Config{Scenario: "broadcast", Server: "x {addr}", CutEvery: 1e9}, "for the recovery scenario"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	c := Config{Scenario: "recovery", Server: "x {addr}"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Protocol != ProtocolPusher || c.Conns != 100 || c.Senders != 1 || c.Messages != 1000 || c.Rate != 100 ||
		c.CutEvery != defaultCutEvery || c.CutDown != defaultCutDown || c.Procs != 1 || c.AppKey != DefaultPusherAppKey {
		t.Errorf("recovery defaults %+v", c)
	}
	// Over a cluster, with node kills.
	c = Config{Scenario: "recovery", Server: "x {addr} {nats}", NATS: "/bin/true", NATSJS: true, Instances: 3, KillEvery: 2e9}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.KillDown != defaultKillDown || c.Instances != 3 || c.Procs != 1 {
		t.Errorf("recovery over a cluster: %+v", c)
	}
}

func TestParsePosition(t *testing.T) {
	for _, c := range []struct {
		in    string
		epoch string
		off   uint64
		ok    bool
	}{
		{"a1b2-3:17", "a1b2-3", 17, true},
		{"e:0", "e", 0, true},
		{"x:y:5", "x:y", 5, true},
		{":5", "", 0, false},
		{"e:", "", 0, false},
		{"e:-1", "", 0, false},
		{"", "", 0, false},
	} {
		ep, off, ok := parsePosition(c.in)
		if ep != c.epoch || off != c.off || ok != c.ok {
			t.Errorf("parsePosition(%q) = %q %d %v, want %q %d %v", c.in, ep, off, ok, c.epoch, c.off, c.ok)
		}
	}
}

// TestE2ERecovery runs the recovery scenario against chatd started by
// chatbench: with chatd's default history every member ends with every
// event once and in order, however often it was cut; with history off,
// or too short for what a cut misses, the run says what was lost.
func TestE2ERecovery(t *testing.T) {
	chatd := servers(t)["chatd"]
	// 20 members, 300 events at 150/s (2s), each member cut every 400ms
	// and away 80ms: about 12 events missed live per cut.
	args := []string{"recovery", "-conns", "20", "-messages", "300", "-rate", "150", "-cut-every", "400ms", "-cut-down", "80ms"}

	rep, table := runBench(t, append(args, "-server", chatd)...)
	x := rep.Runs[0].Recovery
	if x == nil {
		t.Fatalf("no recovery result:\n%s", table)
	}
	if x.Published != 300 || x.SendErrors != 0 || x.Members != 20 || len(x.PerMember) != 20 {
		t.Errorf("published %d (errors %d: %s), members %d, per member %d", x.Published, x.SendErrors, x.FirstSendError, x.Members, len(x.PerMember))
	}
	// Each member is cut about 2s/400ms = 5 times; allow for cuts skipped
	// while a member was still away or catching up.
	if x.Cuts < 40 || x.Reconnects < x.Cuts || x.Replayed == 0 {
		t.Errorf("cuts %d, reconnects %d, replayed %d: the members were not cut and recovered as scheduled", x.Cuts, x.Reconnects, x.Replayed)
	}
	if x.Missed != 0 || x.Duplicates != 0 || x.OutOfOrder != 0 || x.Corrupt != 0 || x.PositionBreaks != 0 || x.Stray != 0 ||
		x.RecoveryFailed != 0 || x.NoPosition != 0 || x.Received != 300*20 {
		t.Errorf("against chatd: received %d, missed %d, duplicated %d, out of order %d, corrupt %d, position breaks %d, stray %d, recovery failed %d (%v), without position %d\n%s",
			x.Received, x.Missed, x.Duplicates, x.OutOfOrder, x.Corrupt, x.PositionBreaks, x.Stray, x.RecoveryFailed, x.FailedCodes, x.NoPosition, table)
	}
	for _, m := range x.PerMember {
		if m.Received != 300 || m.Missed != 0 || m.LastPosition == "" {
			t.Errorf("member %+v", m)
		}
	}
	if x.CleanMembers != 20 {
		t.Errorf("%d of 20 members ended clean", x.CleanMembers)
	}
	if x.CatchUp.Count != uint64(x.Cuts) || x.CatchUp.P50 <= 0 || x.CatchUp.P99 < x.CatchUp.P50 {
		t.Errorf("catch-up %+v after %d cuts: every reconnect after a cut must catch up once", x.CatchUp, x.Cuts)
	}
	for _, row := range []string{"missed", "duplicated", "out of order", "catch-up p99 (ms)", "chatd:recovery_failed"} {
		if !strings.Contains(table, row) {
			t.Errorf("table lacks %q:\n%s", row, table)
		}
	}

	// History off: no positions, so nothing to resume from; the misses
	// are counted, not hidden.
	rep, table = runBench(t, append(args, "-server", chatd+" -history-size 0")...)
	x = rep.Runs[0].Recovery
	if x.Missed == 0 || x.NoPosition == 0 || x.Cuts == 0 || !strings.Contains(table, "without chatd_position") {
		t.Errorf("history off: missed %d, events without position %d, cuts %d\n%s", x.Missed, x.NoPosition, x.Cuts, table)
	}

	// Five events kept, about 20 missed per cut (200/s, away 100ms):
	// chatd answers chatd:recovery_failed (too_old), the member goes on
	// from the channel's position, and what it lost is counted as missed.
	short := []string{"recovery", "-conns", "10", "-messages", "400", "-rate", "200", "-cut-every", "500ms", "-cut-down", "100ms"}
	rep, table = runBench(t, append(short, "-server", chatd+" -history-size 5")...)
	x = rep.Runs[0].Recovery
	if x.RecoveryFailed == 0 || x.FailedCodes["too_old"] == 0 || x.Missed == 0 {
		t.Errorf("history of 5: recovery failed %d (%v), missed %d\n%s", x.RecoveryFailed, x.FailedCodes, x.Missed, table)
	}
	if x.Duplicates != 0 || x.OutOfOrder != 0 || x.PositionBreaks != 0 || x.Corrupt != 0 {
		t.Errorf("history of 5: duplicated %d, out of order %d, position breaks %d, corrupt %d", x.Duplicates, x.OutOfOrder, x.PositionBreaks, x.Corrupt)
	}
	if !strings.Contains(table, "too_old") {
		t.Errorf("table does not say why recovery failed:\n%s", table)
	}

	// A wrong secret fails the run with the server's answer.
	_, _, err := runChatbench(t, "recovery", "-conns", "2", "-messages", "10", "-app-secret", "wrong", "-server", chatd)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong secret: %v", err)
	}
}

func TestFastEvent(t *testing.T) {
	prefix := pusherFast("bench")
	for _, c := range []struct {
		in        string
		data, pos string
		ok        bool
	}{
		{`{"event":"msg","channel":"bench","data":"abc","chatd_position":"e-1:42"}`, "abc", "e-1:42", true},
		{`{"event":"msg","channel":"bench","data":"abc"}`, "abc", "", true},
		{`{"event":"msg","channel":"bench","data":"a\"bc"}`, "", "", false},
		{`{"event":"msg","channel":"other","data":"abc"}`, "", "", false},
		{`{"event":"msg","channel":"bench","data":"abc","user_id":"u"}`, "", "", false},
		{`{"event":"msg","channel":"bench","data":"abc","chatd_position":"e:1"`, "", "", false},
	} {
		data, pos, ok := fastEvent(prefix, []byte(c.in))
		if string(data) != c.data || string(pos) != c.pos || ok != c.ok {
			t.Errorf("fastEvent(%s) = %q %q %v, want %q %q %v", c.in, data, pos, ok, c.data, c.pos, c.ok)
		}
	}
	for _, c := range []struct {
		in    string
		epoch string
		off   uint64
		ok    bool
	}{
		{"a1b2-3:17", "a1b2-3", 17, true},
		{"e:", "", 0, false},
		{":1", "", 0, false},
		{"e:1x", "", 0, false},
		{"e:123456789012345678901", "", 0, false},
	} {
		ep, off, ok := parsePositionBytes([]byte(c.in))
		if string(ep) != c.epoch || off != c.off || ok != c.ok {
			t.Errorf("parsePositionBytes(%q) = %q %d %v", c.in, ep, off, ok)
		}
	}
	// A member's accounting of an event allocates nothing.
	rc := &recoveryRun{cfg: &Config{Senders: 1}, messages: 100, tag: 3, prefix: prefix}
	m := newRecoveryMember(0, rc)
	payload := make([]byte, 64)
	EncodePayload(payload, Payload{Phase: 3, Seq: 1})
	msg := []byte(`{"event":"msg","channel":"bench","data":"` + string(payload) + `","chatd_position":"e:7"}`)
	m.havePos, m.epoch, m.offset = true, "e", 6
	if n := testing.AllocsPerRun(100, func() {
		data, pos, _ := fastEvent(prefix, msg)
		m.event(data, pos)
		m.offset = 6
	}); n != 0 {
		t.Errorf("an event costs %.1f allocations", n)
	}
	if m.distinct.Load() != 1 || m.dups == 0 || m.posBreaks != 0 || m.corrupt != 0 {
		t.Errorf("distinct %d, duplicates %d, position breaks %d, corrupt %d", m.distinct.Load(), m.dups, m.posBreaks, m.corrupt)
	}
}

// TestE2ERecoveryLargeReplay: a member away long enough to miss more
// events than one writev takes (poller.MaxIovecs, 64), but fewer than the
// history keeps (100), must still get every one of them, and the live
// events after them.
func TestE2ERecoveryLargeReplay(t *testing.T) {
	chatd := servers(t)["chatd"]
	// 150 events/s, away 500ms: about 75 missed per cut.
	rep, table := runBench(t, "recovery", "-conns", "5", "-messages", "450", "-rate", "150", "-cut-every", "1200ms", "-cut-down", "500ms", "-server", chatd)
	x := rep.Runs[0].Recovery
	if x.Cuts < 5 || x.ReplayMax <= 64 {
		t.Errorf("cuts %d, at most %d events replayed at one reconnect, want more than 64 (about 75 are missed per cut)\n%s", x.Cuts, x.ReplayMax, table)
	}
	if x.Missed != 0 || x.Duplicates != 0 || x.OutOfOrder != 0 || x.RecoveryFailed != 0 || x.CleanMembers != 5 {
		t.Errorf("replays over 64 events: missed %d, duplicated %d, out of order %d, recovery failed %d (%v), %d of 5 members clean\n%s",
			x.Missed, x.Duplicates, x.OutOfOrder, x.RecoveryFailed, x.FailedCodes, x.CleanMembers, table)
	}
}

// TestE2ERecoveryCluster runs the recovery scenario over three chatd
// nodes joined by a real nats-server with JetStream (cluster history):
// members spread over the nodes are cut on a schedule and, every 1.2s, a
// node is SIGKILLed and started again, its members reconnecting to
// another node with chatd_since. Every member must end with every event
// once, in order. The same cluster with -history-size 0 must lose events
// (the scenario can fail), and one chatd with memory history, killed and
// restarted, must say chatd:recovery_failed (epoch_changed), never leave a
// silent gap.
func TestE2ERecoveryCluster(t *testing.T) {
	chatd := servers(t)["chatd"]
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	store := t.TempDir()
	t.Setenv("TMPDIR", store) // where -nats-js puts the JetStream store of each run
	// 15 members (5 per node), 600 events at 150/s (4s), each member cut
	// every second; a node killed every 1.2s, down 300ms.
	args := []string{"recovery", "-conns", "15", "-messages", "600", "-rate", "150", "-cut-every", "1s", "-cut-down", "100ms",
		"-instances", "3", "-nats", natsBin, "-nats-js", "-kill-every", "1200ms", "-kill-down", "300ms"}
	rep, table := runBench(t, append(args, "-server", chatd+" -nats {nats}")...)
	x := rep.Runs[0].Recovery
	if x == nil {
		t.Fatalf("no recovery result:\n%s", table)
	}
	if x.Nodes != 3 || x.Kills < 3 || x.ServerClosed < 5 || x.Cuts < 15 || x.KillCatchUp.Count == 0 || x.Published != 600 || x.SendErrors != 0 {
		t.Errorf("nodes %d, kills %d, closed by the server %d, cuts %d, catch-ups after a server close %d, published %d (errors %d: %s): the nodes were not killed and the members did not move as scheduled\n%s",
			x.Nodes, x.Kills, x.ServerClosed, x.Cuts, x.KillCatchUp.Count, x.Published, x.SendErrors, x.FirstSendError, table)
	}
	if x.Missed != 0 || x.Duplicates != 0 || x.OutOfOrder != 0 || x.Corrupt != 0 || x.PositionBreaks != 0 || x.Stray != 0 ||
		x.RecoveryFailed != 0 || x.NoPosition != 0 || x.Received != 600*15 || x.CleanMembers != 15 {
		t.Errorf("cluster history: received %d, missed %d, duplicated %d, out of order %d, corrupt %d, position breaks %d, stray %d, recovery failed %d (%v), without position %d, clean %d of 15\n%s",
			x.Received, x.Missed, x.Duplicates, x.OutOfOrder, x.Corrupt, x.PositionBreaks, x.Stray, x.RecoveryFailed, x.FailedCodes, x.NoPosition, x.CleanMembers, table)
	}
	for _, row := range []string{"node kills", "closed by the server", "catch-up after a server close p99 (ms)"} {
		if !strings.Contains(table, row) {
			t.Errorf("table lacks %q:\n%s", row, table)
		}
	}
	if left, _ := os.ReadDir(store); len(left) != 0 {
		t.Errorf("the nats-server's JetStream store was left behind: %v", left)
	}

	// History off: no positions, the cuts and kills lose events.
	rep, table = runBench(t, append(args, "-server", chatd+" -nats {nats} -history-size 0")...)
	x = rep.Runs[0].Recovery
	if x.Missed == 0 || x.NoPosition == 0 || x.Kills == 0 {
		t.Errorf("cluster, history off: missed %d, without position %d, kills %d\n%s", x.Missed, x.NoPosition, x.Kills, table)
	}

	// One node, memory history, killed and started again: a new epoch,
	// which the members are told about.
	rep, table = runBench(t, "recovery", "-conns", "6", "-messages", "300", "-rate", "100", "-cut-every", "1s", "-cut-down", "100ms",
		"-kill-every", "1s", "-kill-down", "200ms", "-server", chatd)
	x = rep.Runs[0].Recovery
	if x.Kills < 2 || x.FailedCodes["epoch_changed"] == 0 || x.Duplicates != 0 || x.OutOfOrder != 0 || x.PositionBreaks != 0 || x.Corrupt != 0 {
		t.Errorf("one node killed: kills %d, recovery failed %v, duplicated %d, out of order %d, position breaks %d, corrupt %d\n%s",
			x.Kills, x.FailedCodes, x.Duplicates, x.OutOfOrder, x.PositionBreaks, x.Corrupt, table)
	}
}
