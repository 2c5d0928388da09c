package server

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/bench/testutil/natstest"

	gorilla "github.com/gorilla/websocket"
)

// newTestCluster starts n servers joined through one NATS server.
func newTestCluster(t *testing.T, n int) (natstest.Server, []*Server) {
	t.Helper()
	ns := natstest.Start(t, 0)
	nodes := make([]*Server, n)
	for i := range nodes {
		nodes[i] = newTestServer(t, Config{Cluster: ClusterConfig{NATS: []string{ns.ClientURL()}, NodeID: "n" + strconv.Itoa(i)}})
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		for i, s := range nodes {
			if !s.broker.Stats().Connected {
				return fmt.Errorf("node %d not connected to NATS", i)
			}
		}
		return nil
	})
	return ns, nodes
}

// TestClusterRawRoomAcrossNodes: a message sent on any node reaches every
// other member of the room on every node exactly once, never the sender,
// and one sender's messages keep their order for every receiver. A node
// with no member in the room does not subscribe to it.
func TestClusterRawRoomAcrossNodes(t *testing.T) {
	ns, nodes := newTestCluster(t, 3)
	const perNode, msgs = 3, 300
	type member struct {
		node int
		c    *gorilla.Conn
	}
	var members []member
	for n := 0; n < 2; n++ { // nodes 0 and 1 have members; node 2 has none
		for i := 0; i < perNode; i++ {
			members = append(members, member{n, dialPeer(t, nodes[n], "cluster")})
		}
		waitMembers(t, nodes[n], "cluster", perNode)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := ns.Subs(); got != 2 {
			return fmt.Errorf("%d NATS subscriptions, want 2 (the nodes with members)", got)
		}
		return nil
	})
	if st := nodes[2].broker.Stats(); st.Rooms != 0 {
		t.Fatalf("node 2 without members receives %d rooms", st.Rooms)
	}
	// Two senders, one on each node, interleaved.
	senders := []int{0, perNode}
	for i := 0; i < msgs; i++ {
		for _, si := range senders {
			if err := members[si].c.WriteMessage(gorilla.TextMessage, []byte(fmt.Sprintf("%d:%d", si, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for mi, m := range members {
		next := map[int]int{}
		want := msgs * len(senders)
		for _, si := range senders {
			if si == mi {
				want -= msgs
			}
		}
		m.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for got := 0; got < want; got++ {
			_, p, err := m.c.ReadMessage()
			if err != nil {
				t.Fatalf("member %d (node %d) after %d of %d: %v", mi, m.node, got, want, err)
			}
			from, seq, _ := strings.Cut(string(p), ":")
			f, _ := strconv.Atoi(from)
			q, _ := strconv.Atoi(seq)
			if f == mi {
				t.Fatalf("member %d got its own message back", mi)
			}
			if q != next[f] {
				t.Fatalf("member %d (node %d): from %d got %d, want %d (lost, duplicated or reordered)", mi, m.node, f, q, next[f])
			}
			next[f]++
		}
		// Exactly once: nothing more comes.
		m.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, p, err := m.c.ReadMessage(); err == nil {
			t.Fatalf("member %d got an extra message %q", mi, p)
		}
	}
	// Interest ends with the last member of a node.
	for _, m := range members[perNode:] {
		m.c.Close()
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := ns.Subs(); got != 1 {
			return fmt.Errorf("%d NATS subscriptions after node 1's members left, want 1", got)
		}
		return nil
	})
}
