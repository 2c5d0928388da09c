package main

import (
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// TestChatdClusterSameNodeID: a rolling restart with one fixed -node-id
// (a unit file) and -reuse-port. Each new process starts beside the old
// one under the same -node-id; neither its start nor the SIGTERM of
// either process takes away presence members of the other one. Before
// per-process identities, the new process deleted the old one's entries
// as its own stale ones, and a stopping one withdrew both.
func TestChatdClusterSameNodeID(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	startNATSProc(t, natsBin, port, t.TempDir())
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(port)
	const ch = "presence-rolling"
	shared := "127.0.0.1:" + strconv.Itoa(freePort(t))
	unit := func() *chatdProc {
		return startChatd(t, bin, "-addr", shared, "-reuse-port", "-nats", natsURL, "-node-id", "a", "-node-timeout", "3s")
	}
	b := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", natsURL, "-node-id", "b", "-node-timeout", "3s")
	obs := joinPresence(t, b.addr, ch, "observer")

	// up waits until p is in the cluster with its shared state established.
	up := func(p *chatdProc) {
		t.Helper()
		testutil.CheckFor(t, 15*time.Second, func() error {
			if metric(t, p.admin, "chatd_cluster_shared_up") != 1 {
				return fmt.Errorf("shared state not up on %s", p.admin)
			}
			return nil
		})
	}
	lists := func(want ...string) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, func() error {
			if got := usersOn(t, b.addr, ch); !slices.Equal(got, want) {
				return fmt.Errorf("b lists %v, want %v", got, want)
			}
			return nil
		})
	}
	// still checks, for longer than a heartbeat and a presence write, that
	// user was not removed.
	still := func(user, when string) {
		t.Helper()
		time.Sleep(2 * time.Second)
		if _, n := obs.find(presenceEvent("member_removed", user)); n != 0 {
			t.Fatalf("%s: member_removed %s, though %s is still connected", when, user, user)
		}
		lists(user, "observer")
	}

	a1 := unit()
	up(a1)
	joinPresence(t, shared, ch, "alice") // the only listener: a1
	lists("alice", "observer")

	a2 := unit()
	up(a2)
	still("alice", "second process with -node-id a started")

	// The rolling restart's second step: a1 stops, alice comes back on a2.
	if err := a1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := a1.exitStatus(t, 15*time.Second); got != 0 {
		t.Fatalf("a1 exited %d", got)
	}
	obs.wait(t, "member_removed alice (a1 stopped)", presenceEvent("member_removed", "alice"))
	joinPresence(t, shared, ch, "alice") // the only listener: a2
	testutil.CheckFor(t, 10*time.Second, func() error {
		if _, n := obs.find(presenceEvent("member_added", "alice")); n != 2 {
			return fmt.Errorf("member_added alice %d times, want 2", n)
		}
		return nil
	})
	lists("alice", "observer")
	removed := func() int { _, n := obs.find(presenceEvent("member_removed", "alice")); return n }
	before := removed()

	// A third process with the same -node-id starts and is stopped again
	// (a restart given up): alice, on a2, stays.
	a3 := unit()
	up(a3)
	if err := a3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := a3.exitStatus(t, 15*time.Second); got != 0 {
		t.Fatalf("a3 exited %d", got)
	}
	time.Sleep(2 * time.Second)
	if n := removed(); n != before {
		t.Fatalf("a3's SIGTERM removed alice, who is connected to a2 (same -node-id)")
	}
	lists("alice", "observer")
	if got := metric(t, a2.admin, "chatd_cluster_nodes"); got != 2 {
		t.Fatalf("a2 counts %d nodes alive, want 2 (itself and b)", got)
	}
}
